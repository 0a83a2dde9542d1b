"""Operator views: show a run, its tree, queue depths (the CLI, metrics); lists and searches
are durable/store/search.py."""

from __future__ import annotations

import uuid
from typing import Any, cast

from psycopg.rows import dict_row

from .connections import Conn
from .runs import key_of, lease_expiry
from .rows import EventDetail, QueueDepth, RunDetail, TreeRow
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


def queue_depths_sync(conn: Any) -> list[QueueDepth]:
    """Queue depths on a blocking connection (the metrics collector runs in a thread)."""
    return [QueueDepth(queue=r[0], ready=int(r[1]), oldest_ready_s=r[2], waiting=int(r[3]))
            for r in conn.execute(q("queue_depths")).fetchall()]
