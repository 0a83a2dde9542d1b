"""Operator views: list runs, show one, its tree, queue depths (the CLI, metrics)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from psycopg import sql
from psycopg.rows import dict_row

from .connections import Conn
from .runs import key_of, lease_expiry
from .rows import EventDetail, QueueDepth, RunDetail, RunFilter, RunListRow, TreeRow, tree_key_of
from .statements import q


def _glob(pattern: str) -> str:
    """A workflow glob ('orders.*') as a LIKE pattern."""
    return pattern.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_").replace("*", "%")


async def list_runs(conn: Conn, f: RunFilter, limit: int) -> list[RunListRow]:
    """Runs matching ``f``, newest first, at most ``limit`` (keyset paging by
    ``f.before``: pass the (created_at, id) of the last row to get the next page)."""
    where: list[sql.Composable] = []
    params: list[Any] = []

    def cond(text: str, *values: Any) -> None:
        where.append(sql.SQL(text))  # fixed fragments, never user text
        params.extend(values)

    if f.statuses:
        cond("status = ANY(%s)", list(f.statuses))
    if f.workflow:
        if "*" in f.workflow:
            cond("workflow LIKE %s", _glob(f.workflow))
        else:
            cond("workflow = %s", f.workflow)
    if f.queue:
        cond("queue = %s", f.queue)
    if f.parent_id is not None:
        cond("parent_id = %s", f.parent_id)
    if f.root_id is not None:
        cond("root_id = %s", f.root_id)
    if f.top_level:
        cond("parent_id IS NULL")
    if f.older_than_s is not None:
        cond("created_at < now() - make_interval(secs => %s)", f.older_than_s)
    if f.newer_than_s is not None:
        cond("created_at >= now() - make_interval(secs => %s)", f.newer_than_s)
    if f.before is not None:
        cond("(created_at, id) < (%s, %s)", *f.before)
    parts: list[sql.Composable] = [sql.SQL(q("_run_list_columns"))]
    if where:
        parts += [sql.SQL(" WHERE "), sql.SQL(" AND ").join(where)]
    parts.append(sql.SQL(" ORDER BY created_at DESC, id DESC LIMIT %s"))
    query = sql.Composed(parts)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, [*params, limit])
    return cast(list[RunListRow], await cur.fetchall())


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
