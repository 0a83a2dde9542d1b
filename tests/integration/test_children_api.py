"""Child workflows in one process against real PostgreSQL: bad input, deterministic ids
and replay, failures, hierarchies, fan-in helpers, M:N waits, outside waits."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

import durable

import wf_children as W
from helpers import child_id, eventually, new_engine, rows, status_of, tree_key


async def children_of(db, parent) -> list[tuple]:
    return await rows(db, "SELECT id, workflow, status FROM durable_runs WHERE parent_id = %s ORDER BY created_at",
                      parent)


async def kinds(db, run_id) -> list[str]:
    return [r[0] for r in await rows(db, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq", run_id)]


# --- bad input --------------------------------------------------------------------------


async def test_bad_inputs_raise_typed_errors_and_write_nothing(db):
    parent = uuid.uuid4()
    taken = child_id(parent, "children.leaf|key|taken")
    missing = uuid.uuid4()
    e1 = new_engine(db)
    async with e1:
        assert await e1.run(W.stash, timeout=20) == 14
        # a run of another workflow already holds the id the parent's keyed child derives
        await e1.start(W.other, 3, id=taken, queue="nowhere")
        with pytest.raises(durable.RunNotFoundError):
            await e1.result(missing, timeout=1)
        await e1.start(W.bad_inputs, {"missing": str(missing)}, id=parent)
        await eventually(lambda: _waiting_signal(db, parent), what="parent waiting for 'resume'")
    before_runs = await rows(db, "SELECT count(*) FROM durable_runs")
    # cold replay in a fresh engine: the caught errors left no trace in the positions
    async with new_engine(db) as e2:
        await e2.signal(parent, "resume")
        out = await e2.result(parent, timeout=20)
    assert out["errors"] == [
        "WorkflowNotFoundError",      # unregistered child workflow
        "ConfigurationError",         # key=5
        "ConfigurationError",         # key function returning ints
        "ConfigurationError",         # ctx.wait(ref of another run)
        "ConfigurationError",         # ctx.gather([ref of another run])
        "RunConflictError",           # child id taken by a run of another workflow
        "RunNotFoundError",           # wait_run on a run that does not exist
        "ConfigurationError",         # wait_run("not-a-uuid")
        "PayloadError",               # input fails the child's type
        "ConfigurationError",         # map(concurrency=0)
    ]
    assert out["results"] == [40, 42]
    assert await kinds(db, parent) == ["child_started", "child_completed", "signal_received",
                                       "child_started", "child_completed"]
    kids = await children_of(db, parent)
    assert [k[1] for k in kids] == ["children.leaf", "children.leaf"]
    assert (await rows(db, "SELECT workflow, status, parent_id FROM durable_runs WHERE id = %s", taken)) == [
        ("children.other", "pending", None)]
    assert (await rows(db, "SELECT count(*) FROM durable_runs"))[0][0] == before_runs[0][0] + 1
    assert await rows(db, "SELECT * FROM durable_waiters") == []


async def _waiting_signal(db, run_id) -> bool:
    r = await rows(db, "SELECT status, (SELECT count(*) FROM durable_events WHERE run_id = %s "
                       "AND kind = 'child_completed') FROM durable_runs WHERE id = %s", run_id, run_id)
    return bool(r) and r[0] == ("suspended", 1)


# --- deterministic ids and replay --------------------------------------------------------


@pytest.mark.parametrize("change", [None, "workflow", "input"])
async def test_replay_reaches_the_same_child_or_raises_nondeterminism(db, change):
    parent = uuid.uuid4()
    W.MODE.update(child="children.leaf", input=1)
    try:
        async with new_engine(db) as e1:
            await e1.start(W.replay, id=parent)
            child = child_id(parent, "replayed|#0")
            await eventually(lambda: _suspended_with_child_done(db, parent, child), what="child done, parent waiting")
        if change == "workflow":
            W.MODE["child"] = "children.other"
        elif change == "input":
            W.MODE["input"] = 2
        async with new_engine(db) as e2:  # cold replay: this engine never saw the run
            await e2.signal(parent, "go")
            if change is None:
                assert await e2.result(parent, timeout=20) == 2
            else:
                with pytest.raises(durable.RunFailedError) as err:
                    await e2.result(parent, timeout=20)
                assert err.value.type == "NonDeterminismError"
                assert f"run {parent} at operation 0" in err.value.message
                assert "child_started 'children.leaf'" in err.value.message
        kids = await children_of(db, parent)
        assert kids == [(child, "children.leaf", "completed")]  # never a second child
        assert (await kinds(db, parent)).count("child_started") == 1
    finally:
        W.MODE.update(child="children.leaf", input=1)


async def _suspended_with_child_done(db, parent, child) -> bool:
    return await status_of(db, parent) == "suspended" and await status_of(db, child) == "completed"


# --- failures, hierarchy, fan-in helpers ------------------------------------------------


async def test_failed_child_is_caught_and_cancelled_child_is_typed(engine, db):
    h = await engine.start(W.catch)
    out = await h.result(timeout=20)
    bad = child_id(h.run_id, "children.leaf|key|bad")
    assert out == {"caught": ["ChildFailedError", "StepError", str(bad)],
                   "gathered": [2, "ChildFailedError", 6], "gather_raises": "StepError"}
    assert (await rows(db, "SELECT count(*) FROM durable_events WHERE run_id = %s AND kind = 'child_failed'",
                       h.run_id))[0][0] == 2

    h2 = await engine.start(W.await_cancel)
    victim = child_id(h2.run_id, "children.gated|key|victim")
    await eventually(lambda: _is(db, victim, "suspended"), what="victim waiting")
    assert await engine.cancel(victim) == 1
    assert await h2.result(timeout=20) == "ChildCancelledError:cancelled"


async def _is(db, run_id, status) -> bool:
    return await status_of(db, run_id) == status


async def test_three_level_hierarchy_completes(engine, db):
    h = await engine.start(W.tree, 2)
    assert await h.result(timeout=30) == {"leaves": 4, "runs": 7}
    levels = await rows(db, "SELECT depth, count(*), bool_and(status = 'completed'), count(DISTINCT root_id) "
                            "FROM durable_runs WHERE root_id = %s GROUP BY depth ORDER BY depth", h.run_id)
    assert levels == [(0, 1, True, 1), (1, 2, True, 1), (2, 4, True, 1)]


async def test_as_completed_yields_first_finished_first(engine, db):
    h = await engine.start(W.order, 3)
    ids = [child_id(h.run_id, f"children.gated|key|o{i}") for i in range(3)]
    for i in ids:
        await eventually(lambda i=i: _is(db, i, "suspended"), what="children waiting")
    for i in (2, 0, 1):  # finish them one by one in this order
        await engine.signal(ids[i], "go", 0)
        await eventually(lambda i=i: _is(db, ids[i], "completed"), what=f"child {i} done")
    assert await h.result(timeout=20) == [2, 0, 1]


async def test_map_keeps_a_bounded_sliding_window(engine, db):
    inputs = [1, 2, 3, 4, -1, 5, 6, 7, 8, 9]
    h = await engine.start(W.mapper, {"inputs": inputs, "window": 3})
    assert await h.result(timeout=30) == [2, 4, 6, 8, "ChildFailedError", 10, 12, 14, 16, 18]
    # in flight when each child was created: created before (or with) it, finished after
    inflight = await rows(db, """
        SELECT count(o.id)
          FROM durable_runs c
          LEFT JOIN durable_runs o ON o.tree_key = c.tree_key AND o.parent_id = c.parent_id
               AND o.created_at <= c.created_at AND o.finished_at > c.created_at
         WHERE c.tree_key = %s AND c.parent_id = %s
         GROUP BY c.id""", tree_key(h.run_id), h.run_id)
    assert len(inflight) == len(inputs)
    assert max(n for (n,) in inflight) == 3


async def test_map_window_survives_a_cold_replay(db):
    """The sliding window refills in journal order, so a replay in a fresh engine starts
    the same children in the same order and never a second one."""
    async with new_engine(db) as e1:
        h = await e1.start(W.map_gated, 5)
        kid = [child_id(h.run_id, f"children.gated|#{i}") for i in range(5)]
        await eventually(lambda: _all_are(db, kid[:2], "suspended"), what="first window")
        await e1.signal(kid[1], "go", 0)
        await eventually(lambda: _all_are(db, kid[2:3], "suspended"), what="window refilled")
        assert len(await children_of(db, h.run_id)) == 3
    c = await db.conn()
    await c.execute("SELECT durable_send_signal(%s, 'go', '0', NULL)", (kid[0],))  # while no engine runs
    async with new_engine(db) as e2:
        for i in (2, 3, 4):
            await eventually(lambda i=i: _all_are(db, kid[i:i + 1], "suspended"), what=f"child {i}")
            await e2.signal(kid[i], "go", 0)
        assert await e2.result(h.run_id, timeout=20) == [0, 1, 2, 3, 4]
    assert sorted(r[0] for r in await children_of(db, h.run_id)) == sorted(kid)


async def _all_are(db, ids, status) -> bool:
    got = await rows(db, "SELECT count(*) FROM durable_runs WHERE id = ANY(%s) AND status = %s", ids, status)
    return got[0][0] == len(ids)


async def test_two_runs_wait_on_one_child_m_to_n(engine, db):
    p1 = await engine.start(W.parent_of_gated)
    shared = child_id(p1.run_id, "children.gated|key|shared")
    await eventually(lambda: _is(db, shared, "suspended"), what="shared child waiting")
    p2 = await engine.start(W.watch, str(shared))
    await eventually(lambda: _is(db, p2.run_id, "suspended"), what="watcher waiting")
    # waiting runs hold no lease and are not heartbeated
    for rid in (p1.run_id, p2.run_id):
        assert (await rows(db, "SELECT r.status, d.leased FROM durable_runs r JOIN durable_due d "
                               "ON d.tree_key = r.tree_key AND d.run_id = r.id WHERE r.id = %s", rid)) == [
            ("suspended", False)]
        assert rid not in engine.runs.active
    assert await rows(db, "SELECT target_id, waiter_id FROM durable_waiters") == [(shared, p2.run_id)]
    await engine.signal(shared, "go", 1)
    want = {"n": 101, "pid": os.getpid()}
    assert await p1.result(timeout=20) == want
    assert await p2.result(timeout=20) == {"result": want}
    # a run waiting on a failed run gets the typed error
    failing = await engine.start(W.leaf, -3)
    with pytest.raises(durable.RunFailedError):
        await failing.result(timeout=20)
    assert await engine.run(W.watch, str(failing.run_id), timeout=20) == {"error": "ChildFailedError"}


# --- outside callers ---------------------------------------------------------------------


def _pg_sockets() -> int:
    """TCP connections of this process to port 5432 (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes and f[2].rsplit(":", 1)[1] == "1538" and f[3] == "01":  # ESTABLISHED
                n += 1
    return n


async def test_outside_wait_is_event_driven_with_bounded_connections(engine, db):
    handles = [await engine.start(W.gated, i) for i in range(40)]
    for h in handles:
        await eventually(lambda h=h: _is(db, h.run_id, "suspended"), what="runs waiting")
    async with new_engine(db, execute=False, pool_size=3) as client:
        with pytest.raises(durable.RunTimeoutError):
            await client.result(handles[0].run_id, timeout=0.3)
        base = _pg_sockets()
        # 120 callers: three on each run
        waits = [asyncio.create_task(client.result(h.run_id, timeout=60)) for h in handles for _ in range(3)]
        await eventually(lambda: _watched(db, 40), what="callers registered")
        await asyncio.sleep(0.2)
        during = _pg_sockets()
        assert client.pool.get_stats().get("pool_size", 0) <= 3
        assert during - base <= 1, "outside waits must not hold a connection each (pool max 3, 2 open)"
        started = time.monotonic()
        c = await db.conn()
        for (run_id,) in await rows(c, "SELECT id FROM durable_runs WHERE status = 'suspended'"):
            await c.execute("SELECT durable_send_signal(%s, 'go', '0', NULL)", (run_id,))
        got = await asyncio.gather(*waits)
        # woken by notifications: well before the 15 s safety re-check of a lost one
        assert time.monotonic() - started < 10
    assert sorted(g["n"] for g in got) == sorted(list(range(40)) * 3)


async def _watched(db, n: int) -> bool:
    r = await rows(db, "SELECT count(*) FROM durable_runs WHERE notify_done")
    return r[0][0] >= n


@durable.workflow("children.gone.target")
async def _gone_target(ctx: durable.Context) -> str:
    return await ctx.wait_signal("go")


@durable.workflow("children.gone.waiter")
async def _gone_waiter(ctx: durable.Context, target: str) -> str:
    try:
        await ctx.wait_run(target)
    except durable.ChildFailedError as exc:
        return exc.type or ""
    return "finished"


async def test_wait_run_on_a_run_deleted_meanwhile_fails_instead_of_hanging(engine, db):
    """A run waited on (M:N) that disappears (retention racing the wait) ends the wait with
    a RunNotFoundError outcome rather than leaving the waiter suspended forever."""
    target = await engine.start(_gone_target)
    waiter = await engine.start(_gone_waiter, str(target.run_id))
    await eventually(lambda: _suspended(waiter), what="the waiter to suspend")
    conn = await db.conn()
    await conn.execute("DELETE FROM durable_events WHERE run_id = %s", (target.run_id,))
    await conn.execute("DELETE FROM durable_runs WHERE id = %s", (target.run_id,))
    await conn.execute("SELECT durable_wake(%s, %s, durable_clock())", (tree_key(waiter.run_id), waiter.run_id))
    assert await waiter.result(timeout=20) == "RunNotFoundError"


async def _suspended(handle) -> bool:
    return await handle.status() == "suspended"


async def test_fan_out_past_the_history_limit_says_which_limit_and_how_big_a_fan_out_fits(db):
    """A fan-out larger than the history has room for fails the run with a HistoryLimitError
    that names the events it needed, what was left, the fan-out size one run can hold, and
    the fixes; no child was started."""
    async with new_engine(db, history_limit=40) as engine:
        h = await engine.start(W.fanout, {"wf": "children.leaf", "n": 50})
        with pytest.raises(durable.RunFailedError) as err:
            await h.result(timeout=20)
    assert err.value.type == "HistoryLimitError"
    msg = err.value.message
    assert "needs 50 journal events" in msg and "history limit of 40" in msg, msg
    assert "about 20 children" in msg and "history_limit" in msg and "child workflows" in msg, msg
    assert await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s", h.run_id) == [(0,)]
