"""continue-as-new: chains awaited by parents and by outside handles, signals during
hand-overs, cancels following the chain, history limits, bad successor input."""
from __future__ import annotations

import asyncio
import uuid

import pytest

import durable
from durable.runtime.renew import continue_as_new_id

from wf_lifecycle import ChainSpec, can_with_child, chain, chain_parent, history_hog, strict_can, wait_other
from helpers import eventually, rows, status_of, tree_key


async def test_parent_awaiting_a_5_link_chain_gets_the_last_result(engine):
    """The parent awaits a child that continues as new 4 times, each link waiting for one
    signal; the signals go to the child's first id while the links hand over."""
    h = await engine.start(chain_parent, ChainSpec(links=5, wait_signal=True))
    async with engine.pool.connection() as conn:
        await eventually(lambda: rows(conn, "SELECT id FROM durable_runs WHERE parent_id = %s", h.run_id), 10,
                         what="the child")
        (child,), = await rows(conn, "SELECT id FROM durable_runs WHERE parent_id = %s", h.run_id)
    for i in range(5):
        assert await engine.signal(child, "tick", i)
        await asyncio.sleep(0.01 * i)
    out = await h.result(timeout=30)
    assert out["link"] == 4 and out["got"] == [0, 1, 2, 3, 4]
    async with engine.pool.connection() as conn:
        links = await rows(conn, "SELECT id, status, continued_to, chain_root_id FROM durable_runs "
                                 "WHERE parent_id = %s ORDER BY created_at, status", h.run_id)
        outcome = await rows(conn, "SELECT data FROM durable_events WHERE run_id = %s AND kind LIKE 'child_%%' "
                                   "AND kind <> 'child_started'", h.run_id)
    assert len(links) == 5
    assert [s for _, s, _, _ in links].count("continued") == 4
    assert len({c for _, _, _, c in links}) == 1  # one chain root, one parent link
    assert out["run_id"] == str(next(i for i, s, _, _ in links if s == "completed"))
    assert len(outcome) == 1 and outcome[0][0]["status"] == "completed"  # never an intermediate marker


async def test_outside_handle_follows_the_chain(engine):
    h = await engine.start(chain, ChainSpec(links=3))
    assert (await h.result(timeout=20))["link"] == 2
    assert (await h.info()).status == "continued"
    # a handle on a middle link, too
    async with engine.pool.connection() as conn:
        (mid,), = await rows(conn, "SELECT continued_to FROM durable_runs WHERE id = %s", h.run_id)
    assert (await engine.get_handle(mid).result(timeout=5))["link"] == 2


async def test_signals_sent_during_hand_overs_reach_the_successors(engine):
    """Each link consumes one 'tick'; all five are sent at once to the chain's first run
    id while links hand over: undelivered ones move to the successor, none is lost or
    delivered twice, order is kept."""
    h = await engine.start(chain, ChainSpec(links=5, wait_signal=True))
    sends = [engine.signal(h.run_id, "tick", i) for i in range(5)]
    for s in sends:  # sequential sends, racing the chain's hand-overs
        assert await s
        await asyncio.sleep(0.005)
    out = await h.result(timeout=30)
    assert out["got"] == [0, 1, 2, 3, 4]


async def test_signal_to_an_old_link_is_delivered_to_the_live_one(engine):
    h = await engine.start(chain, ChainSpec(links=2, wait_signal=True))
    await engine.signal(h.run_id, "tick", "a")
    async with engine.pool.connection() as conn:
        await eventually(lambda: _status(conn, h.run_id, "continued"), 10, what="the first link to continue")
    await engine.signal(h.run_id, "tick", "b")  # the first link is 'continued' now
    assert (await h.result(timeout=20))["got"] == ["a", "b"]


async def _status(conn, run_id, status) -> bool:
    return await status_of(conn, run_id) == status


async def test_cancel_follows_the_chain_and_a_pending_request_is_carried(engine, db):
    h = await engine.start(chain, ChainSpec(links=3, wait_signal=True))
    await engine.signal(h.run_id, "tick", 1)
    async with engine.pool.connection() as conn:
        async def second_waits() -> bool:
            got = await rows(conn, "SELECT status FROM durable_runs WHERE chain_root_id = %s ORDER BY created_at",
                             h.run_id)
            return [s for s, in got] == ["continued", "suspended"]
        await eventually(second_waits, 10, what="the second link to wait")
    res = await engine.cancel(h.run_id)  # the first link's id: the live (second) link is cancelled
    assert res == 1 and res.run_id != h.run_id
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=10)

    # a graceful request pending when a run continues is carried to its successor
    conn = await db.conn()
    rid = uuid.uuid4()
    new = continue_as_new_id(rid)
    (tok,), = await rows(conn, "INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, "
                               "status, input, lease_owner, lease_epoch, cancel_requested) VALUES (%s, %s, %s, %s, "
                               "'x', 1, 'running', '{}', 'o', 1, true) RETURNING lease_epoch",
                         tree_key(rid), rid, rid, rid)
    (ok,), = await rows(conn, "SELECT durable_continue(%s, %s, %s, %s, 'x', 1, '{}')", tree_key(rid), rid, tok, new)
    assert ok
    assert await rows(conn, "SELECT cancel_requested, chain_root_id, status FROM durable_runs WHERE id = %s",
                      new) == [(True, rid, "pending")]


async def test_history_limit_fails_with_a_hint_and_history_length_is_exposed(db):
    async with durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2, history_limit=10) as e:
        assert await e.run(history_hog, 3, timeout=10) == 3
        with pytest.raises(durable.RunFailedError) as err:
            await e.run(history_hog, 20, timeout=10)
        assert err.value.type == "HistoryLimitError"
        assert "continue_as_new" in err.value.message and "10 events" in err.value.message


async def test_continue_as_new_with_invalid_input_is_refused(engine):
    h = await engine.start(strict_can, 1)
    assert await h.result(timeout=10) == "refused:PayloadError"
    assert (await h.info()).continued_to is None


@pytest.mark.parametrize("after", [0.0, 0.05, 0.15])
async def test_cancel_racing_with_hand_overs_leaves_no_link_running(engine, after):
    h = await engine.start(chain, ChainSpec(links=1000))
    await asyncio.sleep(after)
    res = await engine.cancel(h.run_id)
    async with engine.pool.connection() as conn:
        live = await rows(conn, "SELECT id, status FROM durable_runs WHERE status IN ('pending', 'running', "
                                "'suspended')")
        assert live == []
        (n,), = await rows(conn, "SELECT count(*) FROM durable_runs")
        await asyncio.sleep(0.3)
        assert await rows(conn, "SELECT count(*) FROM durable_runs") == [(n,)]
    assert res == 1
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=5)


async def test_wait_run_from_another_workflow_follows_the_chain(engine):
    target = await engine.start(chain, ChainSpec(links=3, wait_signal=True))
    w = await engine.start(wait_other, str(target.run_id))
    for i in range(3):
        await engine.signal(target.run_id, "tick", i)
    assert (await w.result(timeout=20))["got"] == [0, 1, 2]


async def test_unawaited_children_move_to_the_successor(engine):
    h = await engine.start(can_with_child, 0)
    async with engine.pool.connection() as conn:
        async def moved() -> list:
            return await rows(conn, "SELECT c.id, c.parent_id, c.status FROM durable_runs c JOIN durable_runs p "
                                    "ON p.tree_key = c.tree_key AND p.id = c.parent_id WHERE p.tree_key = %s "
                                    "AND p.chain_root_id = %s AND p.status = 'suspended' AND c.status = 'suspended'",
                              tree_key(h.run_id), h.run_id)
        (child, parent, _), = await eventually(moved, 15, what="the child under the successor")
        (succ,), = await rows(conn, "SELECT continued_to FROM durable_runs WHERE id = %s", h.run_id)
        assert parent == succ == continue_as_new_id(h.run_id)  # deterministic successor id, in the tree
        await engine.signal(h.run_id, "finish")
        assert await h.result(timeout=10) == "done"
        # the successor's terminal transaction closed the moved child (TERMINATE)
        assert await rows(conn, "SELECT status, error->>'reason' FROM durable_runs WHERE id = %s", child) == [
            ("cancelled", "parent_closed")]
