"""Operator views: show a run, its tree, queue depths (the CLI, metrics); lists and searches
are durable/store/search.py."""

from __future__ import annotations

import uuid
from typing import Any, cast

from psycopg.rows import dict_row

from .connections import Conn
from .runs import key_of, lease_expiry
from .rows import EventDetail, PendingSignalRow, QueueDepth, RunDetail, TreeBriefRow, TreeRow, TreeShapeRow, tree_key_of
from .statements import q


async def show_run(conn: Conn, run_id: uuid.UUID) -> RunDetail | None:
    key = await key_of(conn, run_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("show_run"), {"key": key, "id": run_id})
    row = await cur.fetchone()
    if row is None:
        return None
    row["lease_expires_at"] = await lease_expiry(conn, row["lease_owner"]) if row["status"] == "running" else None
    return cast("RunDetail", row)


async def show_events(conn: Conn, run_id: uuid.UUID, limit: int) -> list[EventDetail]:
    key = await key_of(conn, run_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("show_events"), {"key": key, "id": run_id, "limit": limit})
    return cast(list[EventDetail], await cur.fetchall())


async def run_tree(conn: Conn, run_id: uuid.UUID, limit: int) -> list[TreeRow]:
    key = await key_of(conn, run_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("run_tree"), {"key": key, "id": run_id, "limit": limit})
    return cast(list[TreeRow], await cur.fetchall())


async def tree_shape(conn: Conn, tree_key: int, limit: int) -> list[TreeShapeRow]:
    """The shape of a tree (the web console): every run (oldest first, at most ``limit``) as
    {id, parent_id, continued_to, workflow, status, child_key}, ids as text."""
    cur = await conn.execute(q("tree_shape"), {"key": tree_key, "limit": limit})
    return [TreeShapeRow(id=r[0], parent_id=r[1], continued_to=r[2], workflow=r[3], status=r[4], child_key=r[5])
            for r in await cur.fetchall()]


async def tree_runs_brief(conn: Conn, tree_key: int, ids: list[str]) -> dict[str, TreeBriefRow]:
    """Queue, times and root cause ({type, message}) of some runs of a tree, by id (text)."""
    if not ids:
        return {}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("tree_runs_brief"), {"key": tree_key, "ids": ids})
    return {r["id"]: cast(TreeBriefRow, r) for r in await cur.fetchall()}


async def pending_signals(conn: Conn, tree_key: int, run_id: uuid.UUID, limit: int) -> list[PendingSignalRow]:
    """Signals sent to a run and not received yet, oldest first (the web console)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("pending_signals"), {"key": tree_key, "id": run_id, "limit": limit})
    return cast(list[PendingSignalRow], await cur.fetchall())


async def runs_existing(conn: Conn, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of ``ids`` (top-level runs: each in the tree its id names) exist."""
    if not ids:
        return []
    cur = await conn.execute(q("runs_existing"), {"keys": [tree_key_of(i) for i in ids], "ids": ids})
    return [r[0] for r in await cur.fetchall()]


def prefix_bounds(prefix: str) -> dict[str, Any]:
    """The parameters of ``runs_by_prefix`` for a hex prefix (1-32 lowercase hex digits):
    the range of tree keys and the range of ids that start with it."""
    lo, hi = uuid.UUID(prefix.ljust(32, "0")), uuid.UUID(prefix.ljust(32, "f"))
    return {"klo": tree_key_of(lo), "khi": tree_key_of(hi), "lo": lo, "hi": hi}


async def runs_by_prefix(conn: Conn, prefix: str, limit: int) -> list[uuid.UUID]:
    """The ids starting with the hex ``prefix`` (lowercase, no hyphens), at most ``limit``,
    found by index ranges (see ``runs_by_prefix`` in queries/inspect.sql)."""
    cur = await conn.execute(q("runs_by_prefix"), {**prefix_bounds(prefix), "limit": limit})
    return [row[0] for row in await cur.fetchall()]


async def queue_depths(conn: Conn) -> list[QueueDepth]:
    """Queue depths (the web console's workers page)."""
    cur = await conn.execute(q("queue_depths_async"))
    return [QueueDepth(queue=r[0], ready=int(r[1]), oldest_ready_s=r[2], waiting=int(r[3]))
            for r in await cur.fetchall()]


def queue_depths_sync(conn: Any) -> list[QueueDepth]:
    """Queue depths on a blocking connection (the metrics collector runs in a thread)."""
    return [QueueDepth(queue=r[0], ready=int(r[1]), oldest_ready_s=r[2], waiting=int(r[3]))
            for r in conn.execute(q("queue_depths")).fetchall()]
