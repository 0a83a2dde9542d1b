"""Retention: forget finished runs older than an age, with their journal and signals.

Finished runs pile up forever unless something deletes them. :func:`gc` deletes whole run
trees, in bounded batches (one call of ``durable_gc_trees`` each), whose every run
(the root, its continue-as-new links, every descendant) finished before the cutoff,
measured by the engine's clock (``durable_now()``), and on none of whose runs a live run
waits (``ctx.wait_run``). A tree with a run still in flight (an abandoned child, say) is
kept until that run ends and ages too.

Batches walk the trees' root runs created before the cutoff by ``(created_at, id)`` with a
keyset cursor (a partial index of roots on an immutable column, so that no index keeps a
terminal update from being HOT), so each batch reads at most ``batch`` roots and a pass
reads each old tree once (roots still running are passed over); deleting a tree deletes by
its key, whatever its size. A tree
another collector holds is skipped, so several processes may collect at once. Deleting a
run also frees its idempotency key.

``durable gc --older-than 7d`` runs it once; ``EngineSettings.retention_s`` runs it in
the background (``durable.worker.retention``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg_pool

from ..durations import parse_duration
from .rows import GcBatch
from .statements import q
from ..errors import ConfigurationError

__all__ = ["DEFAULT_BATCH", "GcResult", "gc"]

log = logging.getLogger("durable.retention")

DEFAULT_BATCH = 500
_START_TS = datetime(1, 1, 1, tzinfo=UTC)
_START_ID = uuid.UUID(int=0)

@dataclass
class GcResult:
    """What one :func:`gc` call deleted."""

    runs: int = 0
    events: int = 0
    signals: int = 0
    batches: int = 0
    passes: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def gc(target: Any, older_than: float, *, batch: int = DEFAULT_BATCH,
             max_batches: int | None = None, dry_run: bool = False) -> GcResult:
    """Delete finished runs older than ``older_than`` seconds (see the module docstring).

    ``target`` is an autocommit connection or a connection pool on durable's schema (an
    Engine's ``engine.pool``). Each batch is its own transaction unless ``dry_run``, which
    runs everything in one transaction and rolls it back, so the counts are exact and
    nothing is deleted. ``max_batches`` bounds the work of one call (the next call goes
    on where the data says, not where this one stopped).
    """
    older_than = parse_duration(older_than, "older_than")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
        raise ConfigurationError(f"batch must be an int between 1 and 100000, got {batch!r}")
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ConfigurationError(f"max_batches must be a positive int or None, got {max_batches!r}")
    started = time.monotonic()
    result = GcResult(dry_run=dry_run)
    if isinstance(target, psycopg_pool.AsyncConnectionPool):
        async with target.connection() as conn:
            await _collect(conn, older_than, batch, max_batches, dry_run, result)
    else:
        await _collect(target, older_than, batch, max_batches, dry_run, result)
    result.seconds = time.monotonic() - started
    if result.runs:
        log.info("retention: %s %d run(s), %d event(s), %d signal(s) older than %.0f s in %d batch(es)",
                 "would delete" if dry_run else "deleted", result.runs, result.events, result.signals,
                 older_than, result.batches)
    return result


async def _collect(conn: Any, age: float, batch: int, max_batches: int | None, dry_run: bool,
                   result: GcResult) -> None:
    if dry_run:
        async with conn.transaction(force_rollback=True):
            await _passes(conn, age, batch, max_batches, result, per_batch_tx=False)
    else:
        await _passes(conn, age, batch, max_batches, result, per_batch_tx=True)


async def _passes(conn: Any, age: float, batch: int, max_batches: int | None, result: GcResult,
                  per_batch_tx: bool) -> None:
    """One pass over the finished roots (a tree is deleted whole: nothing to come back for)."""
    result.passes = 1
    after_ts, after_id = _START_TS, _START_ID
    while True:
        if max_batches is not None and result.batches >= max_batches:
            return
        params = {"age": age, "after_ts": after_ts, "after_id": after_id, "batch": batch}
        if per_batch_tx:
            async with conn.transaction():
                b = await _batch(conn, params)
        else:
            b = await _batch(conn, params)
        result.batches += 1
        result.runs += b.runs
        result.events += b.events
        result.signals += b.signals
        if b.after_ts is None or b.after_id is None or b.scanned < batch:
            return
        after_ts, after_id = b.after_ts, b.after_id


async def _batch(conn: Any, params: dict[str, Any]) -> GcBatch:
    row = await (await conn.execute(q("retention_batch"), params)).fetchone()
    return GcBatch(after_ts=row[0], after_id=row[1], scanned=row[2], kept=row[3], runs=row[4],
                   events=row[5], signals=row[6])
