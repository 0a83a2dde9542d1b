"""Signals: a durable mailbox per run. Sent from outside or from another workflow; kept
when sent before the wait; waits with timeouts on the engine clock; deduplicated by
delivery id; refused for unknown or finished runs."""
from __future__ import annotations

import asyncio
import uuid

import pytest

import durable
from durable.testing import TimeControl

from wf_lifecycle import CALLS, SendSpec, WaitSpec, collect, sender, sleep_then_wait, sleeper, waiter
from helpers import eventually, rows


async def _suspended(h) -> bool:
    return await h.status() == "suspended"


async def test_signal_wakes_a_waiting_run(engine):
    h = await engine.start(waiter, "go")
    await eventually(lambda: _suspended(h), 10, what="the run to wait")
    assert await engine.signal(h.run_id, "go", {"n": 1}) is True
    assert await h.result(timeout=10) == {"n": 1}


async def test_signal_sent_before_the_wait_is_kept(engine):
    h = await engine.start(collect, WaitSpec(name="late", count=2))
    await engine.signal(h.run_id, "late", "a")
    await engine.signal(h.run_id, "late", "b")
    assert await h.result(timeout=10) == ["a", "b"]
    # and a run that waits only after a (durable) sleep also gets it
    async with TimeControl(engine) as clock:
        s = await engine.start(sleep_then_wait, 300.0)
        await eventually(lambda: _suspended(s), 10, what="the run to sleep")
        await engine.signal(s.run_id, "after-sleep", 42)
        await clock.advance(301)
        assert await s.result(timeout=10) == 42


async def test_wait_with_timeout_on_the_engine_clock(engine):
    async with TimeControl(engine) as clock:
        h = await engine.start(collect, WaitSpec(name="x", timeout=30, count=2))
        await eventually(lambda: _suspended(h), 10, what="the run to wait")
        await engine.signal(h.run_id, "x", "first")
        await eventually(lambda: _journaled(engine, h.run_id, "signal_wait", 2), 10, what="the second wait")
        await clock.advance(31)
        assert await h.result(timeout=10) == ["first", "timeout"]


async def _journaled(engine, run_id, kind, n) -> bool:
    async with engine.pool.connection() as conn:
        got = await rows(conn, "SELECT count(*) FROM durable_events WHERE run_id = %s AND kind = %s", run_id, kind)
    return got[0][0] >= n


async def test_delivery_id_deduplicates(engine):
    async with TimeControl(engine) as clock:
        h = await engine.start(collect, WaitSpec(name="pay", timeout=60, count=2))
        assert await engine.signal(h.run_id, "pay", 1, delivery_id="order-7") is True
        assert await engine.signal(h.run_id, "pay", 1, delivery_id="order-7") is False
        await eventually(lambda: _journaled(engine, h.run_id, "signal_received", 1), 10, what="the first signal")
        await clock.advance(61)
        assert await h.result(timeout=10) == [1, "timeout"]
    async with engine.pool.connection() as conn:
        assert await rows(conn, "SELECT count(*) FROM durable_signals") == [(1,)]


async def test_signal_from_another_workflow_is_sent_once(db):
    """A workflow signals another one, then its resume is a cold replay (max_parked=0,
    and its step comes after): the journaled send is not repeated."""
    async with durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2, max_parked=0) as engine:
        target = await engine.start(collect, WaitSpec(name="hello", count=1))
        h = await engine.start(sender, SendSpec(target=str(target.run_id), name="hello", payload={"from": "wf"}))
        assert await h.result(timeout=10) is True
        assert await target.result(timeout=10) == [{"from": "wf"}]
        async with engine.pool.connection() as conn:
            assert await rows(conn, "SELECT count(*) FROM durable_signals") == [(1,)]
            (data,), = await rows(conn, "SELECT data FROM durable_events WHERE run_id = %s AND kind = 'signal_sent'",
                                  h.run_id)
            (resumes,), = await rows(conn, "SELECT count(*) FROM durable_events WHERE run_id = %s", h.run_id)
        assert resumes == 3  # signal_sent, timer_started, step_completed: the send was replayed, not redone
        assert data["target"] == str(target.run_id) and data["delivery_id"].startswith(str(h.run_id))
        assert CALLS[f"sent-{h.run_id}"] == 1


async def test_signal_from_a_workflow_to_a_finished_run_raises_there(engine):
    done = await engine.start(sleeper, 0.0)
    await done.result(timeout=10)
    h = await engine.start(sender, SendSpec(target=str(done.run_id), name="late"))
    with pytest.raises(durable.RunFailedError) as err:
        await h.result(timeout=10)
    assert err.value.type == "RunFinishedError"
    h2 = await engine.start(sender, SendSpec(target=str(uuid.uuid4()), name="nobody"))
    with pytest.raises(durable.RunFailedError) as err:
        await h2.result(timeout=10)
    assert err.value.type == "RunNotFoundError"


async def test_signal_bad_input(engine):
    with pytest.raises(durable.RunNotFoundError):
        await engine.signal(uuid.uuid4(), "x")
    done = await engine.start(sleeper, 0.0)
    await done.result(timeout=10)
    with pytest.raises(durable.RunFinishedError) as err:
        await engine.signal(done.run_id, "x")
    assert "completed" in str(err.value)
    live = await engine.start(waiter, "go")
    for name in ("", None, "x" * 201, 5):
        with pytest.raises(durable.ConfigurationError):
            await engine.signal(live.run_id, name)  # type: ignore[arg-type]
    with pytest.raises(durable.ConfigurationError):
        await engine.signal(live.run_id, "go", delivery_id="")
    with pytest.raises(durable.PayloadError):
        await engine.signal(live.run_id, "go", object())
    with pytest.raises(durable.ConfigurationError):
        await engine.signal("not-a-uuid", "go")
    async with engine.pool.connection() as conn:
        assert await rows(conn, "SELECT count(*) FROM durable_signals") == [(0,)]
    await engine.cancel(live.run_id)
    await asyncio.sleep(0)
