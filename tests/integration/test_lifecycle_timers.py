"""Durable sleep and timers on the database clock, driven by TimeControl (no real
waiting); timers survive restarts and fire once; step timeouts; bad durations. (A timer
in a killed worker process: tests/procs/test_lifecycle_procs.py.)"""
from __future__ import annotations

import pytest

import durable
from durable.testing import TimeControl

from wf_lifecycle import CALLS, BadSpec, bad_timeouts, sleeper, step_timeout_flow
from helpers import eventually, new_engine, rows


def _engine(db, **kw) -> durable.Engine:
    return new_engine(db, sticky_grace_s=0.2, **kw)


async def _suspended(h) -> bool:
    return await h.status() == "suspended"


async def test_sleep_fires_when_the_engine_clock_reaches_it(engine):
    async with TimeControl(engine) as clock:
        h = await engine.start(sleeper, 3600.0)
        await eventually(lambda: _suspended(h), 10, what="the run to sleep")
        await clock.advance(3500)
        await eventually(lambda: _suspended(h), 10, what="still asleep")
        assert f"woke-{h.run_id}" not in CALLS
        await clock.advance(100)
        assert await h.result(timeout=10) == "woke"


async def test_a_timer_survives_a_restart_and_fires_once(db):
    """The process that started the sleep closes; another one opens later, the clock
    passes the fire time: the run wakes there, once."""
    async with _engine(db) as first:
        h = await first.start(sleeper, 600.0)
        await eventually(lambda: _suspended(h), 10, what="the run to sleep")
    async with _engine(db) as second, TimeControl(second) as clock:
        await clock.advance(601)
        assert await second.get_handle(h.run_id).result(timeout=10) == "woke"
        await clock.advance(3600)  # nothing fires twice
        async with second.pool.connection() as conn:
            kinds = [k for k, in await rows(conn, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq",
                                            h.run_id)]
    assert kinds == ["timer_started", "step_completed"]
    assert CALLS[f"woke-{h.run_id}"] == 1


async def test_step_timeout(engine):
    assert await engine.run(step_timeout_flow, 0.2, timeout=20) == "StepTimeoutError"


@pytest.mark.parametrize("what,value", [
    ("sleep", -1), ("sleep", float("inf")), ("sleep", float("nan")), ("sleep", 1e12), ("sleep", "5"),
    ("signal", -0.5), ("signal", 1e300), ("signal", True),
    ("child", -5), ("child", 0),
    ("step", -1), ("step", 0),
])
async def test_bad_durations_are_refused_and_nothing_is_written(engine, what, value):
    out = await engine.run(bad_timeouts, BadSpec(what=what, value=value), timeout=10)
    assert out["error"] == "ConfigurationError", out
    assert out["history"] == 0
    assert "seconds" in out["message"]


async def test_time_control_refuses_going_back(engine):
    async with TimeControl(engine) as clock:
        with pytest.raises(durable.ConfigurationError):
            await clock.advance(-1)
        with pytest.raises(durable.ConfigurationError):
            await clock.advance(float("nan"))
        before = await clock.now()
        await clock.advance(86400)
        assert await clock.now() - before >= 86400
