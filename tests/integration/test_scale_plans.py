"""Plans that stay O(batch) as the tables grow: the claim reads about the rows it returns
with a 100k pending backlog in a table of finished runs, without fresh statistics; the
fan-in reads the new outcomes only, whatever other transactions do. Checked from the plans
(EXPLAIN ANALYZE, JSON) of the statements the engine's own functions run, which
auto_explain hands to the session as notices."""
from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest

from durable.store.statements import SQL
from helpers import execute, new_engine, rows, tree_key

BACKLOG = 100_000
FINISHED = 200_000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for sub in plan.get("Plans", ()):
        yield from _nodes(sub)


def _read(node: dict[str, Any]) -> int:
    """Rows a scan node read: those it returned and those its filter threw away."""
    return int(node["Actual Rows"] * node.get("Actual Loops", 1) + node.get("Rows Removed by Filter", 0))


async def _nested_plans(db: Any, statement: str, params: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Run ``statement`` (in a rolled-back transaction) with auto_explain logging the plan
    of every statement it runs, nested ones included, as notices to this session."""
    conn = await db.conn()
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    try:
        try:
            await conn.execute("LOAD 'auto_explain'")
        except Exception as exc:  # the contrib module is part of every PostgreSQL server package
            pytest.skip(f"auto_explain is not available: {exc}")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_analyze", "on"), ("log_buffers", "on"), ("log_format", "json"),
                               ("log_level", "notice")):
            await conn.execute(f"SET auto_explain.{setting} = {value}")
        async with conn.transaction(force_rollback=True):
            got = await (await conn.execute(statement, params)).fetchall()
    finally:
        await conn.close()
    plans = []
    for text in notices:
        start = text.find("{")
        if text.startswith("duration:") and start >= 0:
            plans.append(json.loads(text[start:]))
    return plans, got


def _scans(plans: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [n for p in plans for n in _nodes(p["Plan"]) if n.get("Relation Name") == table]


async def _fill(db: Any, finished: int, pending: int) -> None:
    await execute(db, f"""
        INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                                  finished_at, created_at)
        SELECT durable_tree_key(g), g, g, g, 'scale.one', 1, 'default', 'completed', '{{}}',
               now() - interval '1 hour', now() - interval '1 hour'
          FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, {finished})) s""")
    await execute(db, f"""
        WITH runs AS (
            INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                                      next_wakeup_at)
            SELECT durable_tree_key(g), g, g, g, 'scale.one', 1, 'default', 'pending', '{{}}',
                   now() - interval '1 minute' * random()
              FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, {pending})) s
            RETURNING tree_key, id, next_wakeup_at)
        INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at)
        SELECT tree_key, id, 'default', 'scale.one:1', next_wakeup_at FROM runs""")


async def test_claim_reads_o_batch_rows_with_a_100k_backlog(db):
    """A claim of 50 from a 100k backlog (plus 200k finished runs, no ANALYZE): the read of
    the claim queue returns at most its window per queue, and the claim itself touches only
    the runs it takes. (The version-4 query read and sorted all 100,000 due rows.)"""
    async with new_engine(db, execute=False):
        pass  # migrated
    await _fill(db, FINISHED, BACKLOG)
    limit = 50
    params = {"queues": ["default", "other"], "workflows": ["scale.one:1"], "owner": "test", "grace": 2.0,
              "limit": limit}
    plans, found = await _nested_plans(db, SQL["claimable"], params)
    assert len(found) == limit
    scans = _scans(plans, "durable_due")
    assert scans, plans
    for n in scans:
        assert _read(n) <= 2 * limit, f"{n['Node Type']} on durable_due read {_read(n)} rows for {limit}"
    assert not _scans(plans, "durable_runs"), "the claim queue's read touched the runs table"

    keys = [r[0] for r in found]
    ids = [r[1] for r in found]
    plans, claimed = await _nested_plans(db, SQL["claim"], {"keys": keys, "ids": ids, "owner": "test",
                                                           "workflows": ["scale.one:1"], "grace": 2.0})
    assert len(claimed) == limit
    for n in _scans(plans, "durable_runs"):
        assert _read(n) <= 1, f"{n['Node Type']} on durable_runs read {_read(n)} rows to claim one run"
    outer = plans[-1]["Plan"]  # the statement itself (its buffers include the nested ones')
    touched = outer.get("Shared Hit Blocks", 0) + outer.get("Shared Read Blocks", 0)
    assert touched < 40 * limit, f"the claim of {limit} runs touched {touched} buffers"


async def test_fan_in_reads_only_new_outcomes_with_a_long_writer_open(db):
    """A parent with 5,010 finished children whose outcomes it has read but 10, while another
    connection holds a writing transaction open (version 1 scanned from the oldest snapshot
    xmin, so it re-read every child finished since): the fan-in reads the 10 new outcomes
    only. Nothing in it depends on transaction ids."""
    async with new_engine(db, execute=False):
        pass
    parent = uuid.uuid4()
    key = tree_key(parent)
    await execute(db, "INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, status, "
                      "input) VALUES (%s, %s, %s, %s, 'scale.parent', 1, 'suspended', '{}')", key, parent, parent,
                  parent)
    long_writer = await db.conn(autocommit=False)
    try:
        await long_writer.execute("SELECT pg_current_xact_id()")  # an xid held open (never committed)
        await execute(db, """
            INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, parent_id, workflow, version, status,
                                      input, result, finished_at)
            SELECT %s, g, %s, g, %s, 'scale.child', 1, 'completed', '{}', '1', now()
              FROM (SELECT durable_in_tree(%s, gen_random_uuid()) AS g FROM generate_series(1, 5010)) s""",
                      key, parent, parent, parent)
        # the parent has journaled all but 10 of them: only those are unread
        await execute(db, "INSERT INTO durable_outcomes (tree_key, parent_id, run_id, finished_at) "
                          "SELECT tree_key, parent_id, id, finished_at FROM durable_runs WHERE parent_id = %s "
                          "ORDER BY id LIMIT 10", parent)
        plans, got = await _nested_plans(db, SQL["finished_children"], {"key": key, "parent": parent, "read": []})
        read = sum(_read(n) for n in _scans(plans, "durable_runs") + _scans(plans, "durable_outcomes"))
        assert read <= 20, f"the fan-in read {read} rows for 10 new outcomes"
        assert len(got) == 10
        held = await rows(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                              "AND state = 'idle in transaction'")
        assert held[0][0] >= 1, "the long writer is not holding a transaction open"
    finally:
        await long_writer.close()
