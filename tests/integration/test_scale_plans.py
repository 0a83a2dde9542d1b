"""Plans that stay O(batch) as the tables grow: the claim reads about the rows it returns
with a 100k pending backlog in a table of finished runs, without fresh statistics.
Checked from EXPLAIN (ANALYZE, FORMAT JSON) of the engine's own statement."""
from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

from durable.store.statements import SQL

from helpers import execute, new_engine, rows

BACKLOG = 100_000
FINISHED = 200_000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for sub in plan.get("Plans", ()):
        yield from _nodes(sub)


async def _fill(db: Any, finished: int, pending: int) -> None:
    await execute(db, f"""
        INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, queue, status, input,
                                  finished_at, created_at)
        SELECT g, g, g, 'scale.one', 1, 'default', 'completed', '{{}}', now() - interval '1 hour',
               now() - interval '1 hour'
          FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, {finished})) s""")
    await execute(db, f"""
        INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, queue, status, input, next_wakeup_at)
        SELECT g, g, g, 'scale.one', 1, 'default', 'pending', '{{}}', now() - interval '1 minute' * random()
          FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, {pending})) s""")


async def test_claim_reads_o_batch_rows_with_a_100k_backlog(db):
    """One CLAIM_DUE of 50 from a 100k backlog (plus 200k finished runs, no ANALYZE): every
    scan of durable_runs returns at most the claim's scan window, and 50 runs are claimed.
    (The version-4 query read and sorted all 100,000 due rows: 92 ms against 5 ms.)"""
    async with new_engine(db, execute=False):
        pass  # migrated
    await _fill(db, FINISHED, BACKLOG)
    limit = 50
    scan = limit * 4 + 16  # as the claimer passes it
    params = {"queues": ["default", "other"], "workflows": ["scale.one:1"], "owner": "test", "grace": 2.0,
              "ttl": 30.0, "limit": limit, "scan": scan}
    conn = await db.conn()
    try:
        async with conn.transaction(force_rollback=True):
            cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL["claim_due"], params)
            doc = (await cur.fetchone())[0]
    finally:
        await conn.close()
    plan = (doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"]
    scans = [n for n in _nodes(plan) if n.get("Relation Name") == "durable_runs"]
    assert scans, plan
    for n in scans:
        read = n["Actual Rows"] * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0)
        assert read <= 2 * scan, f"{n['Node Type']} on durable_runs read {read} rows for a claim of {limit}"
    assert plan["Actual Rows"] == limit
    touched = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    assert touched < 20 * scan, f"the claim touched {touched} buffers"


async def test_fan_in_reads_only_new_outcomes_with_a_long_writer_open(db):
    """A parent with 5,000 finished children whose outcomes it has read and 10 new ones,
    while another connection holds a writing transaction open (version 1 scanned from the
    oldest snapshot xmin, so it re-read every child finished since): the fan-in query reads
    the 10 new children only, and a child's terminal update flags it, a parent's clears."""
    async with new_engine(db, execute=False):
        pass
    parent = uuid.uuid4()
    await execute(db, "INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, status, input) "
                      "VALUES (%s, %s, %s, 'scale.parent', 1, 'suspended', '{}')", parent, parent, parent)
    long_writer = await db.conn(autocommit=False)
    try:
        await long_writer.execute("SELECT pg_current_xact_id()")  # an xid held open (never committed)
        await execute(db, """
            INSERT INTO durable_runs (id, root_id, chain_root_id, parent_id, workflow, version, status, input)
            SELECT g, %s, g, %s, 'scale.child', 1, 'running', '{}'
              FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, 5010)) s""", parent, parent)
        finished = await execute(db, "UPDATE durable_runs SET status = 'completed', result = '1', "
                                     "finished_at = now(), finish_xid = pg_current_xact_id() WHERE parent_id = %s",
                                 parent)
        assert finished == 5010
        assert await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s AND outcome_unread",
                          parent) == [(5010,)]
        # the parent has journaled all but 10 of them (its earlier looks cleared their flags)
        await execute(db, "UPDATE durable_runs SET outcome_unread = false WHERE id IN "
                          "(SELECT id FROM durable_runs WHERE parent_id = %s ORDER BY id LIMIT 5000)", parent)
        conn = await db.conn()
        try:
            async with conn.transaction(force_rollback=True):
                cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL["finished_children"],
                                         {"parent": parent, "read": []})
                doc = (await cur.fetchone())[0]
                got = await (await conn.execute(SQL["finished_children"], {"parent": parent, "read": []})).fetchone()
        finally:
            await conn.close()
        plan = (doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"]
        scans = [n for n in _nodes(plan) if n.get("Relation Name") == "durable_runs"]
        read = sum(n["Actual Rows"] * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0) for n in scans)
        assert read <= 20, f"the fan-in read {read} rows for 10 new outcomes"
        assert len(got[1]) == 10
        held = await rows(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                              "AND state = 'idle in transaction'")
        assert held[0][0] >= 1, "the long writer is not holding a transaction open"
    finally:
        await long_writer.close()
    # the parent ends: its children's flags are cleared with it
    await execute(db, "UPDATE durable_runs SET status = 'completed', finished_at = now() WHERE id = %s", parent)
    assert await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s AND outcome_unread",
                      parent) == [(0,)]
