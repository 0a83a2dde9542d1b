"""Parent-close policies (applied in the parent's terminal transaction), execution
timeouts that cascade by policy, and child retry policies."""
from __future__ import annotations

import pytest

import durable
from durable.runtime.renew import retry_run_id
from durable.testing import TimeControl

from wf_lifecycle import (CALLS, PolicySpec, RetrySpec, TimeoutSpec, policy_parent, retry_parent, sleeper,
                          timeout_parent)
from helpers import eventually, rows


async def _child_of(engine, parent_id):
    async with engine.pool.connection() as conn:
        (cid,), = await rows(conn, "SELECT id FROM durable_runs WHERE parent_id = %s", parent_id)
    return engine.get_handle(cid)


@pytest.mark.parametrize("end", ["complete", "fail"])
async def test_terminate_cancels_the_child_when_the_parent_ends(engine, end):
    h = await engine.start(policy_parent, PolicySpec(policy="terminate", end=end))
    if end == "complete":
        child_id = await h.result(timeout=20)
    else:
        with pytest.raises(durable.RunFailedError):
            await h.result(timeout=20)
        child_id = (await _child_of(engine, h.run_id)).run_id
    with pytest.raises(durable.RunCancelledError) as err:
        await engine.get_handle(child_id).result(timeout=10)
    assert err.value.reason == "parent_closed"
    await eventually(lambda: not engine.runs.active and not engine.runs.parked, 10, what="the child's execution to stop")


async def test_request_cancel_lets_the_child_compensate(engine):
    h = await engine.start(policy_parent, PolicySpec(policy="request_cancel"))
    child_id = await h.result(timeout=20)
    child = engine.get_handle(child_id)
    with pytest.raises(durable.RunCancelledError):
        await child.result(timeout=20)
    assert (await child.info()).result == "compensated"
    assert CALLS.get(f"compensated-{child_id}") == 1


async def test_abandon_child_outlives_its_parent(engine):
    """ABANDON: the parent completes first, the child runs on and completes later."""
    h = await engine.start(policy_parent, PolicySpec(policy="abandon"))
    child_id = await h.result(timeout=20)
    child = engine.get_handle(child_id)
    assert await h.status() == "completed"
    await eventually(lambda: _status_is(child, "suspended"), 10, what="the child to wait")
    assert await engine.signal(child_id, "go", None)
    assert await child.result(timeout=20) == "finished"
    assert await h.status() == "completed"  # the late child completion changed nothing upstream


async def test_hard_cancel_of_the_parent_follows_each_childs_policy(engine):
    parents = {p: await engine.start(policy_parent, PolicySpec(policy=p, end="wait"))
               for p in ("terminate", "request_cancel", "abandon")}
    kids = {}
    for p, h in parents.items():
        await eventually(lambda: _has_child(engine, h.run_id), 10, what="the child")
        kids[p] = await _child_of(engine, h.run_id)
        await eventually(lambda: _status_is(kids[p], "suspended"), 10, what="the child to wait")
    for p, h in parents.items():
        assert await engine.cancel(h.run_id) == (2 if p == "terminate" else 1)
    with pytest.raises(durable.RunCancelledError) as err:
        await kids["terminate"].result(timeout=10)
    assert err.value.reason == "parent_cancelled"
    with pytest.raises(durable.RunCancelledError):
        await kids["request_cancel"].result(timeout=10)
    assert (await kids["request_cancel"].info()).result == "compensated"
    assert await kids["abandon"].status() == "suspended"
    await engine.signal(kids["abandon"].run_id, "go")
    assert await kids["abandon"].result(timeout=10) == "finished"


async def _has_child(engine, parent_id) -> bool:
    async with engine.pool.connection() as conn:
        return bool(await rows(conn, "SELECT 1 FROM durable_runs WHERE parent_id = %s", parent_id))


async def _status_is(h, status) -> bool:
    return await h.status() == status


# --- execution timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["terminate", "request_cancel", "abandon"])
async def test_child_timeout_fails_it_and_its_children_follow_their_policies(engine, policy):
    """A child with a 60 s execution timeout sleeps for an hour; the clock moves 61 s:
    the child fails with WorkflowTimeoutError (its parent sees it as a typed failure)
    and the grandchild follows its parent-close policy."""
    async with TimeControl(engine) as clock:
        h = await engine.start(timeout_parent, TimeoutSpec(timeout=60, policy=policy))
        async with engine.pool.connection() as conn:
            async def grandchild_waits() -> bool:
                got = await rows(conn, "SELECT status FROM durable_runs WHERE depth = 2")
                return got == [("suspended",)]
            await eventually(grandchild_waits, 15, what="the grandchild to wait")
            await clock.advance(61)
            assert await h.result(timeout=20) == "failed:WorkflowTimeoutError"
            (gid, status, reason), = await rows(conn, "SELECT id, status, error->>'reason' FROM durable_runs "
                                                      "WHERE depth = 2")
            (msg,), = await rows(conn, "SELECT error->>'message' FROM durable_runs WHERE depth = 1")
        assert "execution timeout of 60" in msg
        g = engine.get_handle(gid)
        if policy == "terminate":
            assert (status, reason) == ("cancelled", "parent_cancelled")
        elif policy == "request_cancel":
            with pytest.raises(durable.RunCancelledError):
                await g.result(timeout=20)
            assert (await g.info()).result == "compensated"
        else:
            assert status == "suspended"
            await engine.signal(gid, "go")
            assert await g.result(timeout=10) == "finished"
        await eventually(lambda: not engine.runs.active and not engine.runs.parked, 10, what="executions to stop")


async def test_top_level_run_timeout(engine):
    async with TimeControl(engine) as clock:
        h = await engine.start(sleeper, 3600.0, timeout=30)
        await eventually(lambda: _status_is(h, "suspended"), 10, what="the run to sleep")
        await clock.advance(29)
        assert await h.status() == "suspended"
        await clock.advance(2)
        with pytest.raises(durable.RunFailedError) as err:
            await h.result(timeout=20)
        assert err.value.type == "WorkflowTimeoutError"
        assert f"woke-{h.run_id}" not in CALLS


async def test_overdue_runs_expire_by_themselves(db):
    """Without a test clock: the timeouts loop (every 5 poll intervals) finds the run."""
    async with durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.1) as e:
        h = await e.start(sleeper, 3600.0, timeout=0.5)
        with pytest.raises(durable.RunFailedError) as err:
            await h.result(timeout=15)
        assert err.value.type == "WorkflowTimeoutError"
        assert e.timeouts is not None and e.timeouts.expired == 1


async def test_bad_run_timeouts_are_refused(engine):
    for bad in (0, -1, float("inf"), float("nan"), 1e12, "10", True):
        with pytest.raises(durable.ConfigurationError):
            await engine.start(sleeper, 1.0, timeout=bad)
    async with engine.pool.connection() as conn:
        assert await rows(conn, "SELECT 1 FROM durable_runs") == []


# --- child retries ----------------------------------------------------------------------------


async def test_child_retry_runs_new_attempts_with_derived_ids(engine):
    h = await engine.start(retry_parent, RetrySpec(succeed_on=3, max_attempts=3))
    out = await h.result(timeout=30)
    assert out["attempt"] == 3
    async with engine.pool.connection() as conn:
        chain = await rows(conn, "SELECT id, attempt, status, continued_to, error->>'type' FROM durable_runs "
                                 "WHERE parent_id = %s ORDER BY attempt", h.run_id)
    assert [(a, s) for _, a, s, _, _ in chain] == [(1, "continued"), (2, "continued"), (3, "completed")]
    first = chain[0][0]
    assert chain[0][3] == chain[1][0] == retry_run_id(first)  # derived from the old id
    assert chain[1][3] == chain[2][0] == retry_run_id(chain[1][0])
    assert str(chain[2][0]) == out["run_id"]
    assert chain[0][4] == "Flaky"  # the failed attempt keeps its error
    # a handle on the first attempt follows the chain to the final result
    assert (await engine.get_handle(first).result(timeout=5))["attempt"] == 3


async def test_child_retry_gives_up_after_max_attempts(engine):
    h = await engine.start(retry_parent, RetrySpec(succeed_on=5, max_attempts=2))
    assert await h.result(timeout=30) == {"failed": "Flaky"}


async def test_child_retry_waits_its_delay_on_the_engine_clock(engine):
    async with TimeControl(engine) as clock:
        h = await engine.start(retry_parent, RetrySpec(succeed_on=2, max_attempts=2, interval=60))
        async with engine.pool.connection() as conn:
            async def second_attempt_waits() -> bool:
                return bool(await rows(conn, "SELECT 1 FROM durable_runs WHERE attempt = 2 AND status = 'pending' "
                                             "AND next_wakeup_at > durable_now() + interval '55 s'"))
            await eventually(second_attempt_waits, 15, what="the second attempt to be scheduled")
        await clock.advance(61)
        assert (await h.result(timeout=20))["attempt"] == 2
