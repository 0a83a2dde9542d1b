"""Distribution by tree (schema version 7), on both backends: a child's terminal transaction
wakes its parent through the LISTEN of the server the engine is connected to (on Citus the
coordinator: a notification issued inside a statement that a worker runs is never heard
there), every row of a tree lives on its root's shard, and the hot transactions (start
children, a step, a child's terminal with the parent's wake, a cancel cascade) each touch
one shard. The Citus-only checks skip on plain PostgreSQL, where there are no shards."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

import wf_children as W
from durable.store import events as store_events
from durable.store import lifecycle as store_lifecycle
from durable.store import runs as store_runs
from dbharness import BACKEND
from helpers import child_id, eventually, new_engine, rows, status_of, tree_key

async def _is(db: Any, run_id: Any, status: str) -> bool:
    return await status_of(db, run_id) == status


citus_only = pytest.mark.skipif(BACKEND != "citus", reason="shards exist on Citus only "
                                                           "(DURABLE_TEST_BACKEND=citus)")


async def test_child_terminal_wakes_parent_through_the_listen_of_the_engines_server(db):
    """The engine polls once a minute, so only notifications can move this tree along: the
    signal wakes the child, the child's terminal transaction wakes the parent. A LISTEN on
    another connection to the same server (the coordinator on Citus) hears the parent's
    wake carrying the parent's id, and the parent finishes within seconds."""
    heard: list[str] = []
    listener = await db.conn()
    (channel,), = await rows(listener, "SELECT durable_channel()")
    await listener.execute(f'LISTEN "{channel}"')

    async def collect() -> None:
        async for note in listener.notifies():
            heard.append(note.payload)

    collecting = asyncio.create_task(collect())
    try:
        async with new_engine(db, poll_interval_s=60.0) as engine:
            h = await engine.start(W.parent_of_gated)
            kid = child_id(h.run_id, "children.gated|key|shared")
            await eventually(lambda: _is(db, kid, "suspended"), 10, what="the child to wait for its signal")
            await eventually(lambda: _is(db, h.run_id, "suspended"), 10, what="the parent to wait")
            t0 = time.monotonic()
            await engine.signal(kid, "go", 5)
            assert await h.result(timeout=10) == {"n": 105, "pid": W.os.getpid()}
            assert time.monotonic() - t0 < 5, "the parent waited for a poll, not for the child's notification"
        await eventually(lambda: any(p.startswith(f"{h.run_id}|") for p in heard), 5,
                         what="the parent's wake on the LISTEN connection")
    finally:
        collecting.cancel()


@citus_only
async def test_every_table_is_distributed_by_tree_and_colocated(db):
    got = dict(await rows(db, """
        SELECT c.relname, p.partmethod::text || ':' || coalesce(a.attname, '-') || ':' || p.colocationid
          FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid
               AND a.attname = column_to_column_name(p.logicalrelid, p.partkey)
         WHERE n.nspname = current_schema()"""))
    distributed = {t: v for t, v in got.items() if v.startswith("h:tree_key:")}
    assert set(distributed) == {"durable_runs", "durable_events", "durable_signals", "durable_waiters",
                                "durable_due", "durable_deadlines", "durable_outcomes"}
    assert {v.split(":")[1] for v in distributed.values()} == {"tree_key"}
    assert len({v.split(":")[2] for v in distributed.values()}) == 1, f"not co-located: {distributed}"
    assert got["durable_workers"].startswith("h:owner:"), "processes are distributed by process"
    assert {t for t, v in got.items() if v.startswith("n:")} == {"durable_run_keys", "durable_workflows",
                                                                       "durable_search_keys"}


@citus_only
async def test_a_tree_lives_on_its_roots_shard(engine, db):
    h = await engine.start(W.fanout, {"n": 20, "wf": "children.kid"})
    assert (await h.result(timeout=30))["count"] == 20
    ids = [r for r, in await rows(db, "SELECT id FROM durable_runs WHERE root_id = %s", h.run_id)]
    assert len(ids) == 21
    assert {tree_key(i) for i in ids} == {tree_key(h.run_id)}, "a child id does not carry its root's tree key"
    shards = await rows(db, """
        SELECT DISTINCT get_shard_id_for_distribution_column(%s, tree_key)
          FROM (SELECT tree_key FROM durable_runs WHERE root_id = %s
                UNION ALL SELECT tree_key FROM durable_events e WHERE e.run_id = ANY(%s)) t""",
                        f"{db.schema}.durable_runs", h.run_id, ids)
    assert len(shards) == 1


async def _shards(conn: Any, tree: int) -> tuple[set[str], set[str]]:
    """The shard of each co-located table that the tree ``tree`` maps to, and the shards of
    the tables every tree reads: the reference tables and the processes (read by owner)."""
    mine = {str(s) for s, in await rows(conn, """
        SELECT get_shard_id_for_distribution_column(t, %s)
          FROM unnest(ARRAY['durable_runs', 'durable_events', 'durable_signals', 'durable_waiters', 'durable_due',
                            'durable_deadlines', 'durable_outcomes']) t""", tree)}
    reference = {str(s) for s, in await rows(conn, """
        SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_partition p USING (logicalrelid)
         WHERE (p.partmethod = 'n' AND s.logicalrelid::regclass::text LIKE '%%durable_%%')
            OR s.logicalrelid = 'durable_workers'::regclass""")}
    return mine, reference


class RemoteCommands:
    """The statements a session's transactions send to Citus workers (citus.log_remote_commands)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.notices: list[str] = []
        conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))

    async def start(self) -> "RemoteCommands":
        await self.conn.execute("SET citus.log_remote_commands = on")
        await self.conn.execute("SET client_min_messages = log")
        return self

    def shards(self) -> tuple[set[str], bool]:
        """Shard ids named in the remote commands since the last call (table_<shardid>), and
        whether a commit went in two phases (PREPARE TRANSACTION)."""
        got = {m for n in self.notices for m in re.findall(r"durable_[a-z_]+?_(\d{6,})", n)}
        two_phase = any("PREPARE TRANSACTION" in n for n in self.notices)
        self.notices.clear()
        return got, two_phase


@citus_only
async def test_hot_transactions_touch_one_tree_s_shards(db):
    """The engine's hot transactions, called as the engine calls them (store functions,
    fenced by a claimed lease epoch): claim, start children, a step, a child's terminal
    with its parent's wake, a cancel cascade. Each sends its statements to the shards the
    tree's key maps to (and the reference tables) only, never to another tree's shards,
    and commits in one phase."""
    async with new_engine(db, execute=False) as client:
        h = await client.start(W.leaf, 1)
    key = tree_key(h.run_id)
    conn = await db.conn()
    mine, reference = await _shards(conn, key)
    log = await RemoteCommands(conn).start()
    allowed = mine | reference

    def check(what: str) -> None:
        text = list(log.notices)
        touched, two_phase = log.shards()
        assert touched, f"{what}: no remote command logged (is citus.log_remote_commands working?)"
        assert touched <= allowed, f"{what} touched shards of other trees: {sorted(touched - allowed)}"
        # a two-phase commit interrupted between its phases keeps its rows locked until
        # Citus recovers it (citus.recover_2pc_interval): the hot transactions commit in one
        assert not two_phase, f"{what} committed in two phases: " + "\n".join(text)[:3000]

    (parent,) = await store_runs.claim(conn, [(key, h.run_id)], workflows=["children.leaf:1"], owner="probe",
                                       grace=0.0)
    check("the claim")
    kids = [child_id(h.run_id, f"children.leaf|key|k{i}") for i in range(3)]
    assert await store_events.start_children(conn, key, h.run_id, parent.lease_epoch, [
        {"id": str(k), "workflow": "children.leaf", "version": 1, "queue": "default", "input": i, "pos": i, "seq": i + 1}
        for i, k in enumerate(kids)])
    check("starting children")
    assert await store_events.append_event(conn, key, h.run_id, parent.lease_epoch, 4, None, "step_completed",
                                           "double", '{"result": 2}')
    check("a step")
    assert await store_runs.suspend(conn, key, h.run_id, parent.lease_epoch, None) is not None
    check("suspending")
    (kid,) = await store_runs.claim(conn, [(key, kids[0])], workflows=["children.leaf:1"], owner="probe", grace=0.0)
    check("claiming a child")
    assert await store_runs.finish(conn, key, kids[0], kid.lease_epoch, "completed", "2", None, 10) == "finished"
    check("a child's terminal and its parent's wake")
    assert await status_of(db, h.run_id) == "suspended"
    (due,), = await rows(conn, "SELECT due_at IS NOT NULL FROM durable_due WHERE tree_key = %s AND run_id = %s",
                      key, h.run_id)
    assert due, "the child's terminal did not make its parent due"
    outcome = await store_lifecycle.cancel(conn, h.run_id, graceful=False, reason="test", max_depth=10)
    assert outcome.cancelled >= 3
    check("a cancel cascade")
