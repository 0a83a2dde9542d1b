"""Cancellation: the depth-bounded cascade, executors stopping, races with child
completions, cancel_child, bad input. Real PostgreSQL, real executors in this process.
(Executors in a worker process and races with child starts there:
tests/procs/test_lifecycle_procs.py.)"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid

import pytest

import durable
from durable.store.rows import in_tree
from durable.observe import hooks
from durable import CancelResult

from wf_lifecycle import CALLS, TreeSpec, await_child, cancel_child_flow, parent_of_quick, sleeper, tree
from helpers import eventually, new_engine, rows, status_of, tree_key

IN_FLIGHT = ("pending", "running", "suspended")


def _engine(db, **kw) -> durable.Engine:
    return new_engine(db, **{"sticky_grace_s": 0.3, **kw})


async def test_cascade_depth_12_cancels_depth_10_and_reports_the_rest(db, caplog):
    """A tree 12 levels deep with fan-out (leaves sleeping, in long steps, waiting for
    signals at every level): a client with max_child_depth=10 cancels the root. Exactly
    the runs at depth <= 10 are cancelled in one transaction, the deeper ones are
    reported as truncated (hook + log), the executor of every cancelled run stops, and
    no event is appended to a cancelled run afterwards."""
    seen: list[hooks.HookEvent] = []
    detach = hooks.on("cascade.*", seen.append)
    spec = TreeSpec(max_depth=12, fan={0: 3, **{d: 2 for d in range(1, 12)}}, leaf="mixed", leaves_from=2)
    kinds = _leaf_kinds(spec)
    expected = sum(kinds.values())
    assert expected == 1 + 3 + 6 * 11  # root, 3 at depth 1, then 6 per level (3 branches + 3 leaves)
    try:
        # heartbeats every 20 s: only the cancel notification can stop the executors in time
        async with _engine(db, max_child_depth=12, lease_ttl_s=60.0) as ex_engine, \
                _engine(db, execute=False, max_child_depth=10) as client:
            root = await ex_engine.start(tree, spec)
            conn = await db.conn()

            async def built() -> bool:  # every run started and waiting, or in its long step
                counts = dict(await rows(conn, "SELECT status, count(*) FROM durable_runs GROUP BY status"))
                return counts == {"suspended": expected - kinds["step"], "running": kinds["step"]}
            await eventually(built, 60, what="the whole tree to be started and waiting")
            executing = await rows(conn, "SELECT id FROM durable_runs WHERE status = 'running'")
            assert executing, "some leaves are executing long steps"
            assert any(r in ex_engine.runs.parked for r, in await rows(conn, "SELECT id FROM durable_runs WHERE "
                                                                  "status = 'suspended'"))
            with caplog.at_level(logging.WARNING, logger="durable.runtime.cancel"):
                res = await client.cancel(root.run_id)
            assert isinstance(res, CancelResult)
            by_depth = dict(await rows(conn, "SELECT depth, count(*) FROM durable_runs GROUP BY depth"))
            assert res == sum(n for d, n in by_depth.items() if d <= 10)
            assert res.truncated == by_depth[11] + by_depth[12] == 12
            assert res.status_before in IN_FLIGHT and not res.already_finished

            states = await rows(conn, "SELECT depth, status, error->>'reason', lease_owner FROM durable_runs")
            for depth, status, reason, owner in states:
                if depth <= 10:
                    assert status == "cancelled" and owner is None
                    assert reason == ("cancelled" if depth == 0 else "parent_cancelled")
                else:
                    assert status in IN_FLIGHT, (depth, status)
            assert [e.fields for e in seen if e.name == "cascade.truncated"] == [
                {"run_id": root.run_id, "depth_limit": 10, "truncated": 12}]
            assert any("max_child_depth=10" in r.getMessage() for r in caplog.records)

            cancelled = [r for r, in await rows(conn, "SELECT id FROM durable_runs WHERE depth <= 10")]
            seqs = dict(await rows(conn, "SELECT run_id, max(seq) FROM durable_events WHERE run_id = ANY(%s) "
                                         "GROUP BY run_id", cancelled))
            # told by notification: every executor of a cancelled run stops (the long steps
            # would take an hour), parked coroutines are dropped
            await eventually(lambda: not any(r in ex_engine.runs.active or r in ex_engine.runs.parked for r in cancelled),
                             10, what="executors of cancelled runs to stop")
            await asyncio.sleep(0.5)
            assert dict(await rows(conn, "SELECT run_id, max(seq) FROM durable_events WHERE run_id = ANY(%s) "
                                         "GROUP BY run_id", cancelled)) == seqs
            # the deeper runs were left alone and still execute
            deep_running = [r for r, in await rows(conn, "SELECT id FROM durable_runs WHERE depth > 10 "
                                                         "AND status = 'running'")]
            assert all(r in ex_engine.runs.active for r in deep_running)
            # cleanup: the truncated ones, by hand as the warning says
            for r, in await rows(conn, "SELECT id FROM durable_runs WHERE depth = 11"):
                assert await client.cancel(r) >= 1
    finally:
        detach()


def _leaf_kinds(spec: TreeSpec) -> dict[str, int]:
    """How many runs of each kind the tree workflow makes (mirrors wf_lifecycle.tree)."""
    out = {"inner": 0, "sleep": 0, "step": 0, "signal": 0}

    def walk(depth: int, index: int) -> None:
        if depth >= spec.max_depth or (depth >= spec.leaves_from and index > 0):
            out[("sleep", "step", "signal")[(depth + index) % 3]] += 1
            return
        out["inner"] += 1
        for i in range(spec.fan.get(depth, 1)):
            walk(depth + 1, i)

    walk(0, 0)
    return out


ROUNDS = 300  # the version-1 terminal transaction deadlocked here in about 1 round of 30


async def test_child_completing_while_parent_is_cancelled_sql_race(db):
    """The two transactions directly, many times, interleaved by the server: a child's
    terminal transaction (which wakes its parent) against the cancel of that parent
    (which locks parent then child), and against the parent's own terminal transaction
    (TERMINATE policy on its children). No deadlock, no lost outcome: the child ends
    either completed with its result or cancelled, never both, never neither."""
    conns = [await db.conn() for _ in range(6)]
    outcomes = {"child_first": 0, "cancel_first": 0}
    for i in range(ROUNDS):
        g = uuid.uuid4()
        p, c = in_tree(g, uuid.uuid4()), in_tree(g, uuid.uuid4())
        key = tree_key(g)
        toks = await _insert_tree(conns[0], g, p, c)
        jitter = random.random() * 0.002
        child_done = conns[1].execute("SELECT durable_finish(%s, %s, %s, 'completed', '42', NULL, 10)",
                                      (key, c, toks[c]))
        if i % 2 == 0:
            other = conns[2].execute("SELECT * FROM durable_cancel(%s, false, 'x', 10)", (p,))
        else:  # the parent completes at the same time (TERMINATE closes the child)
            other = conns[2].execute("SELECT durable_finish(%s, %s, %s, 'completed', '1', NULL, 10)",
                                     (key, p, toks[p]))
        sibling = conns[3].execute("SELECT durable_wake(%s, %s, durable_clock())", (key, g))
        await asyncio.sleep(jitter)
        r1, r2, _ = await asyncio.gather(child_done, other, sibling)
        finished = (await r1.fetchone())[0] == "finished"
        await r2.fetchall()
        (status, result, reason), = await rows(conns[0], "SELECT status, result, error->>'reason' FROM durable_runs "
                                                         "WHERE id = %s", c)
        if finished:
            assert (status, result) == ("completed", 42)
            outcomes["child_first"] += 1
        else:
            assert status == "cancelled" and result is None
            assert reason in ("parent_cancelled", "parent_closed")
            outcomes["cancel_first"] += 1
        assert await status_of(conns[0], p) in ("cancelled", "completed")
    assert sum(outcomes.values()) == ROUNDS
    assert outcomes["child_first"] and outcomes["cancel_first"], outcomes


async def _insert_tree(conn, g, p, c) -> dict:
    """A running grandparent -> parent -> child, each leased (as if executing)."""
    toks = {}
    key = tree_key(g)
    for rid, parent, depth in ((g, None, 0), (p, g, 1), (c, p, 2)):
        (tok,), = await rows(conn, "INSERT INTO durable_runs (tree_key, id, root_id, parent_id, chain_root_id, "
                                   "workflow, version, status, input, depth, lease_owner, lease_epoch) "
                                   "VALUES (%s, %s, %s, %s, %s, 'x', 1, 'running', '{}', %s, 'nobody', 1) "
                                   "RETURNING lease_epoch", key, rid, g, parent, rid, depth)
        await rows(conn, "SELECT durable_set_due(%s, %s, 'default', 'x:1', NULL, 'nobody', true)", key, rid)
        toks[rid] = tok
    return toks


async def test_child_completing_while_parent_is_cancelled_with_executors(engine, caplog):
    """The same race with real executors, many times: each parent waits for a child that
    finishes after a step, and the parent is cancelled at a random moment around that.
    Every cancel returns, every child ends completed or cancelled, no executor errors."""
    conn_rows = []
    with caplog.at_level(logging.WARNING):
        for i in range(25):
            h = await engine.start(parent_of_quick, i)
            await asyncio.sleep(random.random() * 0.03)
            res = await engine.cancel(h.run_id)
            conn_rows.append((h.run_id, res))
        async with engine.pool.connection() as conn:
            async def settled() -> bool:
                got = await rows(conn, "SELECT status FROM durable_runs")
                return all(s not in IN_FLIGHT for s, in got)
            await eventually(settled, 20, what="every run to end")
            got = await rows(conn, "SELECT parent_id IS NULL, status, result FROM durable_runs")
        for is_parent, status, result in got:
            if is_parent:
                assert status in ("cancelled", "completed")
            else:
                assert status in ("cancelled", "completed")
                if status == "completed":
                    assert result is not None
    assert not [r for r in caplog.records if "deadlock" in r.getMessage().lower()]
    await eventually(lambda: not engine.runs.active and not engine.runs.parked, 10, what="executions to end")


async def test_cancel_child_from_the_parent(engine):
    """ctx.cancel_child cancels one child (and is journaled: the replay-safe result is
    returned); awaiting it raises ChildCancelledError; other children are untouched."""
    h = await engine.start(cancel_child_flow, False)
    out = await h.result(timeout=20)
    assert out["child"] == "cancelled:cancelled_by_parent"
    assert out["cancelled"] == 1
    assert out["other"] == "woke"
    async with engine.pool.connection() as conn:
        evs = await rows(conn, "SELECT kind, data FROM durable_events WHERE run_id = %s AND kind = 'child_cancel'",
                         h.run_id)
    assert len(evs) == 1 and evs[0][1]["status_before"] in IN_FLIGHT


async def test_cancel_child_graceful_lets_the_child_compensate(engine):
    h = await engine.start(cancel_child_flow, True)
    out = await h.result(timeout=20)
    assert out["child"] == "cancelled:cancelled"  # it compensated and ended cancelled
    assert out["cancelled"] == 0
    assert any(k.startswith("compensated2-") for k in CALLS)


async def test_cancel_bad_input(engine):
    with pytest.raises(durable.RunNotFoundError):
        await engine.cancel(uuid.uuid4())
    with pytest.raises(durable.ConfigurationError):
        await engine.cancel("not-a-uuid")
    with pytest.raises(durable.ConfigurationError):
        await engine.cancel(uuid.uuid4(), reason="")
    h = await engine.start(sleeper, 0.0)
    assert await h.result(timeout=10) == "woke"
    res = await engine.cancel(h.run_id)  # terminal: a no-op that says so
    assert res == 0 and res.already_finished and res.status_before == "completed"
    assert await h.status() == "completed"
    again = await engine.start(sleeper, 3600.0)
    await eventually(lambda: _all_status_h(engine, again, "suspended"), 10, what="the run to sleep")
    assert await engine.cancel(again.run_id) == 1
    second = await engine.cancel(again.run_id)
    assert second == 0 and second.status_before == "cancelled"


async def _all_status_h(engine, h, status) -> bool:
    return await h.status() == status


async def test_starting_a_child_deeper_than_the_bound_is_refused(db):
    from wf_lifecycle import deep

    async with _engine(db, max_child_depth=3) as e:
        with pytest.raises(durable.RunFailedError) as err:
            await e.run(deep, 5, timeout=20)
        # the failure travels up: the deepest parent got ChildDepthError, each above ChildFailedError
        async with e.pool.connection() as conn:
            (typ, msg), = await rows(conn, "SELECT error->>'type', error->>'message' FROM durable_runs "
                                           "WHERE depth = 3")
        assert typ == "ChildDepthError" and "max_child_depth=3" in msg
        assert err.value.type == "ChildFailedError"


async def test_cancelling_a_child_wakes_its_parent_with_child_cancelled(engine):
    h = await engine.start(await_child)
    async with engine.pool.connection() as conn:
        async def child() -> list:
            return await rows(conn, "SELECT id FROM durable_runs WHERE parent_id = %s AND status = 'suspended'",
                              h.run_id)
        (cid,), = await eventually(child, 10, what="the child to sleep")
        await eventually(lambda: _all_status_h(engine, h, "suspended"), 10, what="the parent to wait")
        assert await engine.cancel(cid) == 1
        assert await h.result(timeout=10) == "child_cancelled:cancelled"
        (kind,), = await rows(conn, "SELECT kind FROM durable_events WHERE run_id = %s AND kind LIKE 'child_%%' "
                                    "AND kind <> 'child_started'", h.run_id)
        assert kind == "child_cancelled"
