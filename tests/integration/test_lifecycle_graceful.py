"""Graceful cancel (request_cancel): the run sees CancellationRequested at its next await,
may compensate (durable steps and waits included) and ends as cancelled. Engines here
keep no parked coroutines (max_parked=0), so every resume is a cold replay from the
journal: the interrupted wait must replay as interrupted."""
from __future__ import annotations

import asyncio

import pytest

import durable

from wf_lifecycle import CALLS, as_completed_cancel, graceful, graceful_raise
from helpers import eventually, rows


@pytest.fixture
async def cold(db):
    e = durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2, lease_ttl_s=5.0, sticky_grace_s=0.2,
                       max_parked=0)
    async with e:
        yield e


async def _waiting(engine, h, status="suspended") -> None:
    await eventually(lambda: _is(h, status), 15, what=f"run to be {status}")


async def _is(h, status) -> bool:
    return await h.status() == status


@pytest.mark.parametrize("mode", ["signal", "sleep", "child"])
async def test_graceful_cancel_interrupts_the_wait_and_compensates(cold, mode):
    h = await cold.start(graceful, mode)
    await _waiting(cold, h)
    res = await cold.cancel(h.run_id, graceful=True)
    assert res == 0 and res.graceful and res.status_before == "suspended"
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=20)
    info = await h.info()
    assert info.status == "cancelled" and info.result == "compensated"
    assert CALLS.get(f"compensated-{h.run_id}") == 1 and CALLS.get(f"compensated2-{h.run_id}") == 1
    async with cold.pool.connection() as conn:
        kinds = [k for k, in await rows(conn, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq",
                                        h.run_id)]
        assert kinds.count("cancel_observed") == 1
        if mode == "child":  # the parent ended: TERMINATE cancelled the child it was waiting for
            (status, reason), = await rows(conn, "SELECT status, error->>'reason' FROM durable_runs "
                                                 "WHERE parent_id = %s", h.run_id)
            assert (status, reason) == ("cancelled", "parent_closed")


async def test_graceful_cancel_during_a_step_is_seen_at_the_next_operation(engine):
    h = await engine.start(graceful, "step")
    await eventually(lambda: h.run_id in engine.runs.active, 10, what="the step to run")
    await engine.cancel(h.run_id, graceful=True)
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=20)
    assert (await h.info()).result == "compensated"
    assert f"after-step-{h.run_id}" not in CALLS  # the step finished, the next operation raised


async def test_uncaught_request_ends_the_run_cancelled(cold):
    h = await cold.start(graceful_raise)
    await _waiting(cold, h)
    await cold.cancel(h.run_id, graceful=True)
    with pytest.raises(durable.RunCancelledError) as err:
        await h.result(timeout=20)
    assert err.value.reason == "cancelled"


async def test_graceful_request_to_a_pending_run_and_a_hard_cancel_after_it(db):
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        h = await client.start(graceful, "signal")  # nobody executes it yet
        await client.cancel(h.run_id, graceful=True)
        async with durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2):
            with pytest.raises(durable.RunCancelledError):
                await h.result(timeout=20)
        assert (await h.info()).result == "compensated"
        again = await client.start(graceful_raise)
        await client.cancel(again.run_id, graceful=True)
        assert await client.cancel(again.run_id) == 1  # a hard cancel still works on top
        assert await again.status() == "cancelled"
        await asyncio.sleep(0)


async def test_interrupted_as_completed_replays_as_interrupted(cold):
    """One child finished, the fan-in waits for the other when the cancel request comes;
    the compensation waits for both and sleeps, so the run resumes by cold replay. The
    replayed as_completed must stop where the live one was interrupted, although the
    second child's outcome (journaled later, during the compensation) is now known."""
    h = await cold.start(as_completed_cancel)
    async with cold.pool.connection() as conn:
        await eventually(lambda: rows(conn, "SELECT 1 FROM durable_runs WHERE parent_id = %s AND status = "
                                            "'suspended' HAVING count(*) = 2", h.run_id), 15, what="children")
        kids = {r[1]: r[0] for r in await rows(conn, "SELECT id, input #>> '{}' FROM durable_runs "
                                                     "WHERE parent_id = %s", h.run_id)}
    await cold.signal(kids["go-1"], "go-1", "one")
    await eventually(lambda: _journaled(cold, h.run_id, "child_completed"), 15, what="the first outcome")
    await eventually(lambda: _is(h, "suspended"), 15, what="the parent to wait again")
    await cold.cancel(h.run_id, graceful=True)
    await eventually(lambda: _journaled(cold, h.run_id, "cancel_observed"), 15, what="the interruption")
    await cold.signal(kids["go-2"], "go-2", "two")
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=20)
    assert (await h.info()).result == {"got": ["one"], "rest": ["one", "two"], "compensated": True}


async def _journaled(engine, run_id, kind) -> bool:
    async with engine.pool.connection() as conn:
        return bool(await rows(conn, "SELECT 1 FROM durable_events WHERE run_id = %s AND kind = %s", run_id, kind))
