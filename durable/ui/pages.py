"""What the console's pages show, read through the engine and the store's read views (no
SQL here): the runs list with counts by status, one run (detail, timeline, tree), the
workers and queues."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..engine import Engine
from ..errors import FailureInfo, RunNotFoundError
from ..store import inspect as store_inspect
from ..store import registry as store_registry
from ..store.connections import Conn, run_typed
from ..store.runs import key_of
from ..store.rows import PendingSignalRow, QueueDepth, RunDetail, RunSummary, WorkerInfo, tree_key_of
from ..trees import group_children, tree_doc
from . import timeline
from .filters import RunsQuery, id_prefix, idempotency_run_id

COUNT_CAP = 10_000      # counts by status are over the newest this many matching runs
EVENTS_SHOWN = 1000     # history events on a run page (the first ones)
TREE_LIMIT = 20_000     # runs of a tree read for a run page
TEXT_MATCHES = 20       # runs found by id prefix / idempotency key
SIGNALS_SHOWN = 50      # pending signals listed on a run page


@dataclass
class RunsView:
    runs: list[RunSummary]
    next_cursor: str | None
    now: datetime
    counts: dict[str, int]
    counts_capped: bool
    text_matches: list[RunDetail] | None  # the free-text search's runs (None: no search)


@dataclass
class RunView:
    run: RunDetail
    events: list[dict[str, Any]]
    items: list[timeline.Item]
    span_s: float
    signals: list[PendingSignalRow]
    tree: dict[str, Any]
    tree_runs: int
    tree_truncated: bool
    chain: list[FailureInfo]
    now: datetime


def _pool(engine: Engine) -> Any:
    assert engine.pool is not None  # the app answers 503 while the engine is not open (app.py)
    return engine.pool


async def runs_view(engine: Engine, rq: RunsQuery) -> RunsView:
    page = await engine.list_runs(**rq.kwargs, limit=rq.limit, cursor=rq.cursor)
    counts, capped = await engine.count_runs_by_status(
        **{k: v for k, v in rq.kwargs.items() if k != "status"}, cap=COUNT_CAP)
    matches = None
    if rq.text:
        async def read(conn: Conn) -> list[RunDetail]:
            return await _text_matches(conn, rq.text, rq.workflow)

        matches = await run_typed(_pool(engine), read, what="searching runs by id or key")
    return RunsView(page.runs, page.next_cursor, page.db_now, counts, capped, matches)


async def _text_matches(conn: Conn, text: str, workflow: str) -> list[RunDetail]:
    """Runs whose id starts with ``text``, and the run started with idempotency key
    ``text`` (of the workflow filter when it names one, else of any registered workflow)."""
    ids: list[uuid.UUID] = []
    prefix = id_prefix(text)
    if prefix is not None:
        ids += await store_inspect.runs_by_prefix(conn, prefix, TEXT_MATCHES)
    names = [workflow] if workflow and "*" not in workflow and "?" not in workflow \
        else await store_registry.names(conn)
    ids += await store_inspect.runs_existing(conn, [idempotency_run_id(n, text) for n in names])
    found: list[RunDetail] = []
    for rid in list(dict.fromkeys(ids))[:TEXT_MATCHES]:
        detail = await store_inspect.show_run(conn, rid)
        if detail is not None:
            found.append(detail)
    return found


async def run_view(engine: Engine, rid: uuid.UUID) -> RunView:
    signals: list[PendingSignalRow] = []

    async def read(conn: Conn) -> tuple[RunDetail | None, list[dict[str, Any]], list[Mapping[str, Any]],
                                        dict[str, Any] | None, bool]:
        detail = await store_inspect.show_run(conn, rid)
        if detail is None:
            return None, [], [], None, False
        events = [dict(e) for e in await store_inspect.show_events(conn, rid, EVENTS_SHOWN)]
        key = tree_key_of(detail["root_id"])
        if detail["pending_signals"]:
            signals[:] = await store_inspect.pending_signals(conn, await key_of(conn, rid), rid, SIGNALS_SHOWN)
        rows: list[Mapping[str, Any]] = list(await store_inspect.tree_shape(conn, key, TREE_LIMIT + 1))
        me = str(rid)
        if (len(rows) > TREE_LIMIT and detail["root_id"] != rid) or not any(r["id"] == me for r in rows):
            # a part of a tree too big to read whole (or of a tree made before schema 7): from the run down
            rows = [_shape(r) for r in await store_inspect.run_tree(conn, rid, TREE_LIMIT + 1)]
        if not rows:
            return detail, events, [], None, False
        tree, _, truncated = tree_doc(rows, me, TREE_LIMIT)
        grouped = group_children(tree)
        shown: list[dict[str, Any]] = []
        _shown(grouped, shown)
        brief = await store_inspect.tree_runs_brief(conn, key, [n["id"] for n in shown])
        for n in shown:
            n.update({k: v for k, v in brief.get(n["id"], {}).items() if k != "id"})
        return detail, events, rows, grouped, truncated

    detail, events, rows, tree, truncated = await run_typed(_pool(engine), read, what=f"reading run {rid}")
    if detail is None:
        raise RunNotFoundError(rid)
    if tree is None:
        tree = {"id": str(rid), "workflow": detail["workflow"], "status": detail["status"], "children": [],
                "continued_as": None, "key": detail["child_key"]}
    by_id = {r["id"]: r for r in rows}
    kids = {r["id"]: (_chain_status(r, by_id), r["child_key"]) for r in rows}
    outcome = None
    if detail["status"] in ("completed", "failed", "cancelled"):
        outcome = (detail["status"], "→ " + timeline.compact(detail["result"]) if detail["status"] == "completed"
                   else timeline.error_line(detail["error"]))
    items, span = timeline.build(events, detail["created_at"], kids, detail["continued_to"],
                                 detail["finished_at"] or detail["db_now"], outcome)
    info = FailureInfo.from_doc(detail["error"])
    return RunView(detail, events, items, max(span, 0.001), signals, tree, _size(tree), truncated,
                   list(info.chain()) if info is not None else [], detail["db_now"])


def _shape(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``run_tree`` in the form of ``tree_shape`` (ids as text)."""
    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    return {"id": str(row["id"]), "parent_id": text(row["parent_id"]), "continued_to": text(row["continued_to"]),
            "workflow": row["workflow"], "status": row["status"], "child_key": row["child_key"]}


def _shown(node: dict[str, Any], out: list[dict[str, Any]]) -> None:
    """The runs a grouped tree document shows one by one (not those inside groups)."""
    n: dict[str, Any] | None = node
    while n is not None:
        if "group" not in n:
            out.append(n)
            for child in n.get("children", []):
                _shown(child, out)
        n = n.get("continued_as")


def _size(node: dict[str, Any]) -> int:
    """The runs in a (grouped) tree document."""
    total = 0
    n: dict[str, Any] | None = node
    while n is not None:
        total += n["group"]["count"] if "group" in n else 1 + sum(_size(c) for c in n.get("children", []))
        n = n.get("continued_as")
    return total


def _chain_status(row: Mapping[str, Any], by_id: Mapping[str, Mapping[str, Any]]) -> str:
    """The status of the last run of ``row``'s continue-as-new chain (as far as it was read)."""
    seen = 0
    while row["status"] == "continued" and row["continued_to"] in by_id and seen < 1000:
        row, seen = by_id[row["continued_to"]], seen + 1
    return str(row["status"])


@dataclass
class WorkersView:
    workers: list[WorkerInfo]
    queues: list[QueueDepth]
    now: datetime


async def workers_view(engine: Engine) -> WorkersView:
    workers = await engine.list_workers()

    async def read(conn: Conn) -> list[QueueDepth]:
        return await store_inspect.queue_depths(conn)

    depths = await run_typed(_pool(engine), read, what="reading queue depths")
    return WorkersView(workers, depths, datetime.now(timezone.utc))
