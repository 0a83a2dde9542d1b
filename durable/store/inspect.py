"""Operator views: show a run, its tree, queue depths (the CLI, metrics); lists and searches
are durable/store/search.py."""

from __future__ import annotations

import uuid
from typing import Any, cast

from psycopg.rows import dict_row

from .connections import Conn
from .runs import key_of, lease_expiry
from .rows import EventDetail, QueueDepth, RunDetail, TreeRow, tree_key_of
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


def queue_depths_sync(conn: Any) -> list[QueueDepth]:
    """Queue depths on a blocking connection (the metrics collector runs in a thread)."""
    return [QueueDepth(queue=r[0], ready=int(r[1]), oldest_ready_s=r[2], waiting=int(r[3]))
            for r in conn.execute(q("queue_depths")).fetchall()]
