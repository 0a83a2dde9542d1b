"""Listing and searching runs: the filters of ``engine.list_runs`` / ``count_runs`` and the
CLI's ``durable runs`` / ``durable count``, composed from the fixed fragments of
``queries/search.sql`` (never from user text), newest first with keyset paging on
(created_at, id); search attributes and the table of their known keys."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ..attributes import filter_docs
from ..errors import ConfigurationError, SearchAttributeError
from .connections import Conn
from .rows import RunFilter, RunPage, RunSummary
from .runs import key_of
from .statements import q

STATUSES = ("pending", "running", "suspended", "completed", "failed", "cancelled", "continued")
MAX_LIMIT = 10_000


def glob_pattern(pattern: str) -> str:
    """A workflow glob ('orders.*', '?' one character) as a LIKE pattern."""
    out = pattern.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    return out.replace("*", "%").replace("?", "_")


def statuses(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``status=`` as a tuple of known statuses (a typed error names the valid ones)."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    for s in items:
        if s not in STATUSES:
            raise ConfigurationError(f"unknown run status {s!r}; use one of {', '.join(STATUSES)}")
    return items


def encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return f"{created_at.isoformat()},{run_id}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        ts, _, rid = cursor.rpartition(",")
        at = datetime.fromisoformat(ts)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, uuid.UUID(rid)
    except (ValueError, AttributeError):
        raise ConfigurationError(f"cursor {cursor!r} is not a cursor returned by list_runs (RunPage.next_cursor); "
                                 "pass it unchanged, or None for the first page") from None


async def known_keys(conn: Conn) -> list[str]:
    cur = await conn.execute(q("search_known_keys"))
    return [r[0] for r in await cur.fetchall()]


async def add_keys(conn: Conn, keys: Iterable[str]) -> None:
    """Record attribute keys (idempotent; before the write that first uses them)."""
    ks = sorted(set(keys))
    if ks:
        await conn.execute(q("search_add_keys"), (ks,))


async def _where(conn: Conn, f: RunFilter) -> tuple[list[sql.Composable], list[Any]]:
    where: list[sql.Composable] = []
    params: list[Any] = []

    def cond(name: str, *values: Any) -> None:
        where.append(sql.SQL(q(name)))  # a fixed fragment of queries/search.sql
        params.extend(values)

    if f.attributes:
        docs = filter_docs(f.attributes)  # a bad filter value: typed error before any read
        known = set(await known_keys(conn))
        unknown = sorted(set(f.attributes) - known)
        if unknown:
            names = ", ".join(sorted(known)[:50]) or "none yet"
            raise SearchAttributeError(
                f"no run has a search attribute {unknown[0]!r}; known keys: {names}. Check the spelling, or set it "
                "with engine.start(..., attributes={...}) or ctx.set_attributes(...)")
        for alternatives in docs:
            cond("_where_attribute", [Jsonb(d) for d in alternatives])
    if f.statuses:
        cond("_where_status", list(statuses(f.statuses)))
    if f.workflow:
        if "*" in f.workflow or "?" in f.workflow:
            cond("_where_workflow_glob", glob_pattern(f.workflow))
        else:
            cond("_where_workflow", f.workflow)
    if f.queue:
        cond("_where_queue", f.queue)
    if f.parent_id is not None:
        cond("_where_parent", await key_of(conn, f.parent_id), f.parent_id)
    if f.root_id is not None:
        cond("_where_root", await key_of(conn, f.root_id), f.root_id)
    if f.top_level:
        cond("_where_top_level")
    if f.created_after is not None:
        cond("_where_created_after", f.created_after)
    if f.created_before is not None:
        cond("_where_created_before", f.created_before)
    if f.finished_after is not None:
        cond("_where_finished_after", f.finished_after)
    if f.finished_before is not None:
        cond("_where_finished_before", f.finished_before, f.finished_before)
    if f.older_than_s is not None:
        cond("_where_older_than", f.older_than_s)
    if f.newer_than_s is not None:
        cond("_where_newer_than", f.newer_than_s)
    return where, params


def _compose(head: str, where: list[sql.Composable], tail: str | None = None) -> sql.Composed:
    parts: list[sql.Composable] = [sql.SQL(q(head))]
    if where:
        parts += [sql.SQL(" WHERE "), sql.SQL(" AND ").join(where)]
    if tail is not None:
        parts += [sql.SQL(" "), sql.SQL(q(tail))]
    return sql.Composed(parts)


def list_statement(where: list[sql.Composable]) -> sql.Composed:
    return _compose("_search_list", where, "_search_order")


async def list_runs(conn: Conn, f: RunFilter, limit: int) -> RunPage:
    """Runs matching ``f``, newest first, at most ``limit``; ``f.before`` is the keyset
    cursor (the (created_at, id) of the last row of the previous page)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    where, params = await _where(conn, f)
    if f.before is not None:
        where.append(sql.SQL(q("_where_before_cursor")))
        params.extend(f.before)
    cur = await conn.execute(list_statement(where), [*params, limit + 1])
    rows = await cur.fetchall()
    if rows:
        now: datetime = rows[0][13]
    else:
        clock = await (await conn.execute(q("search_now"))).fetchone()
        assert clock is not None
        now = clock[0]
    runs = [RunSummary(id=r[0], workflow=r[1], version=r[2], queue=r[3], status=r[4], parent_id=r[5], root_id=r[6],
                       child_key=r[7], attributes=r[8], created_at=r[9], started_at=r[10], finished_at=r[11],
                       error_type=r[12], error_message=r[14], attempt=r[15]) for r in rows[:limit]]
    nxt = encode_cursor(runs[-1].created_at, runs[-1].id) if len(rows) > limit else None
    return RunPage(runs=runs, next_cursor=nxt, db_now=now)


async def count_runs(conn: Conn, f: RunFilter) -> int:
    where, params = await _where(conn, f)
    row = await (await conn.execute(_compose("_search_count", where), params)).fetchone()
    return int(row[0]) if row else 0


async def explain(conn: Conn, f: RunFilter, limit: int, options: str = "FORMAT JSON") -> Any:
    """The plan of :func:`list_runs` for ``f`` (tests and bench.search check it is served by
    indexes). ``options``: one of the fixed option lists below."""
    if options not in _EXPLAIN:
        raise ConfigurationError(f"explain options must be one of {sorted(_EXPLAIN)}")
    where, params = await _where(conn, f)
    stmt = sql.Composed([sql.SQL(q(_EXPLAIN[options])), sql.SQL(" "), list_statement(where)])
    cur = await conn.execute(stmt, [*params, limit + 1])
    return [r[0] for r in await cur.fetchall()]


_EXPLAIN = {"FORMAT JSON": "_explain_json", "ANALYZE, BUFFERS, FORMAT JSON": "_explain_analyze_json",
            "ANALYZE, BUFFERS": "_explain_analyze"}


async def start_attributes(conn: Conn, tree_key: int, run_id: uuid.UUID, attrs: dict[str, Any]) -> None:
    """The attributes given at start (in the start's transaction)."""
    await conn.execute(q("search_start_attributes"), {"attrs": Jsonb(attrs), "key": tree_key, "id": run_id})


async def run_attributes(conn: Conn, tree_key: int, run_id: uuid.UUID) -> dict[str, Any]:
    """A run's search attributes ({} when none or no such run)."""
    row = await (await conn.execute(q("search_run_attributes"), {"key": tree_key, "id": run_id})).fetchone()
    return dict(row[0]) if row and row[0] else {}


async def set_attributes(conn: Conn, tree_key: int, run_id: uuid.UUID, epoch: int, seq: int, pos: int | None,
                         op: str | None, attrs: dict[str, Any]) -> bool:
    """Merge ``attrs`` into a running run's attributes and journal them, fenced by the
    lease epoch; False when the lease was lost (nothing written)."""
    row = await (await conn.execute(q("search_set_attributes"), {
        "key": tree_key, "id": run_id, "epoch": epoch, "seq": seq, "pos": pos, "op": op,
        "attrs": Jsonb(attrs)})).fetchone()
    return bool(row and row[0])


# --- the web console's counts by status (issue 16) -----------------------------------------


async def status_sample(conn: Conn, f: RunFilter, cap: int) -> tuple[dict[str, int], bool]:
    """Counts by status among the newest ``cap`` runs matching ``f`` (its statuses and
    cursor ignored) and whether ``cap`` was reached (then the counts are of a sample: the
    newest ``cap``). One index range, newest first: bounded at any table size."""
    where, params = await _where(conn, dataclasses.replace(f, statuses=(), before=None))
    rows = await (await conn.execute(_compose("_search_status_sample", where, "_search_status_sample_tail"),
                                     [*params, cap])).fetchall()
    counts = {r[0]: int(r[1]) for r in rows}
    return counts, bool(rows) and int(rows[0][2]) >= cap
