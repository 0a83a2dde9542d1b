"""Cancellation: cancel a run from outside (``engine.cancel``) or a child from inside its
parent (``ctx.cancel_child``), and what each reports.

The cancel itself is one transaction in the database (``durable_cancel``): the run's
parent is locked, then the run, then its in-flight descendants generation by generation,
bounded by ``max_child_depth``. Every cancelled run loses its lease, so a still-running
executor fails its next journal write; to stop it *now*, the cascade sends one
``cancel|<owner>`` notification per process that held a cancelled run, and that process
checks its executions at once (:meth:`durable.runtime.runs.RunTable.check_cancelled`).
"""

from __future__ import annotations

import logging
import time
import uuid

from ..errors import ConfigurationError
from ..observe import hooks
from ..store import lifecycle as store_lifecycle
from ..store.connections import Conn, Pool, run_typed
from ..store.rows import CancelOutcome, Event, split_key
from . import keys, runlog
from .host import RunView

log = logging.getLogger(__name__)

IN_FLIGHT = ("pending", "running", "suspended")


class CancelResult(int):
    """What a cancel did. As an int: how many runs it cancelled (0 for a graceful
    request, or when the run had already finished). ``status_before`` is the run's status
    when the cancel took effect (``'completed'``, ``'failed'``, ``'cancelled'`` mean it
    was a no-op); ``truncated`` counts in-flight descendants below ``max_child_depth``
    that were left alone; ``run_id`` is the run cancelled (the live link of a
    continue-as-new chain)."""

    status_before: str
    truncated: int
    graceful: bool
    run_id: uuid.UUID | None

    def __new__(cls, cancelled: int, *, status_before: str, truncated: int = 0, graceful: bool = False,
                run_id: uuid.UUID | None = None) -> "CancelResult":
        obj = super().__new__(cls, cancelled)
        obj.status_before = status_before
        obj.truncated = truncated
        obj.graceful = graceful
        obj.run_id = run_id
        return obj

    @property
    def already_finished(self) -> bool:
        """True when the run had already ended, so the cancel changed nothing."""
        return self.status_before not in IN_FLIGHT

    def __repr__(self) -> str:
        return (f"CancelResult(cancelled={int(self)}, status_before={self.status_before!r}, "
                f"truncated={self.truncated}, graceful={self.graceful})")


def check_request(graceful: object, reason: object) -> None:
    if not isinstance(graceful, bool):
        raise ConfigurationError(f"graceful must be True or False, got {graceful!r}")
    if not isinstance(reason, str) or not reason or len(reason) > 200:
        raise ConfigurationError(f"reason must be a non-empty string of at most 200 characters, got {reason!r}")


async def cancel(pool: Pool, run_id: uuid.UUID, *, graceful: bool, reason: str, max_depth: int) -> CancelResult:
    """Cancel a run (the live link of its chain) and its in-flight descendants, or ask it to
    cancel itself (``graceful``). Raises RunNotFoundError for an unknown run."""
    check_request(graceful, reason)
    started = time.perf_counter()

    async def go(conn: Conn) -> CancelOutcome:
        return await store_lifecycle.cancel(conn, run_id, graceful=graceful, reason=reason, max_depth=max_depth)

    got = await run_typed(pool, go, what=f"cancel of run {run_id}")
    res = CancelResult(got.cancelled, status_before=got.status_before, truncated=got.truncated, graceful=graceful,
                       run_id=got.live_id)
    if res.already_finished:
        log.info("cancel of run %s: it had already %s; nothing to do", run_id, got.status_before,
                 extra={"run_id": str(run_id)})
        return res
    if graceful:  # the run logs its outcome when it ends (runlog)
        log.debug("run %s was asked to cancel; it sees CancellationRequested at its next await", got.live_id,
                  extra={"run_id": str(got.live_id)})
        return res
    labels = None
    if got.live_id is not None and (hooks.listening("run.cancelled") or runlog.log.isEnabledFor(logging.INFO)):
        # one label lookup, only when someone listens: the hook or the log line
        async with pool.connection() as conn:
            labels = await store_lifecycle.run_labels(conn, got.live_id)
    runlog.outcome(logging.INFO, "cancelled", got.live_id or run_id, labels.workflow if labels else None, None,
                   text=f"with {got.cancelled - 1} descendant(s) in {time.perf_counter() - started:.3f} s",
                   cancel_reason=reason, descendants=got.cancelled - 1)
    if labels is not None:
        hooks.emit("run.cancelled", run_id=labels.id, workflow=labels.workflow, queue=labels.queue,
                   reason=reason)
    report_cascade(run_id, got.cancelled, got.truncated, max_depth)
    return res


def report_cascade(run_id: uuid.UUID, cancelled: int, truncated: int, limit: int) -> None:
    hooks.emit("cascade.completed", run_id=run_id, cancelled=cancelled)
    if truncated:
        log.warning("cancel of run %s: %d in-flight descendant(s) more than max_child_depth=%d levels below "
                    "it were not cancelled; cancel them separately or raise max_child_depth",
                    run_id, truncated, limit, extra={"run_id": str(run_id)})
        hooks.emit("cascade.truncated", run_id=run_id, depth_limit=limit, truncated=truncated)


async def cancel_child(ex: RunView, child: uuid.UUID, graceful: bool) -> CancelResult:
    """``ctx.cancel_child``: cancel (or ask to cancel) one of this run's children. The
    cancel and its journal event are one transaction under the parent's lease."""
    if not isinstance(graceful, bool):
        raise ConfigurationError(f"graceful must be True or False, got {graceful!r}")
    key = await keys.op(ex)
    found = f"cancel_child {child}"
    evs = ex.journal.expect(key, ("child_cancel",), None, found)
    if evs:
        d = evs[0].data
        if d.get("child_id") != str(child):
            raise ex.journal.nondeterminism(key, f"cancel_child {d.get('child_id')}", found)
        return CancelResult(d["cancelled"], status_before=d["status_before"], truncated=d.get("truncated", 0),
                            graceful=d["graceful"], run_id=child)
    pos, op = split_key(key)
    max_depth = ex.settings.max_child_depth
    ex.begin_busy()
    try:
        async with ex.journal.write() as (conn, token, seq):
            got = await store_lifecycle.cancel_child(conn, ex.tree_key, ex.run_id, token, child, graceful=graceful,
                                                     seq=seq, pos=pos, op=op, max_depth=max_depth)
            if got is None:
                raise ex.journal.lost()
    finally:
        ex.end_busy()
    data = {"child_id": str(child), "graceful": graceful, "cancelled": got.cancelled, "truncated": got.truncated,
            "status_before": got.status_before}
    ex.journal.record(Event(seq, pos, "child_cancel", None, data, op))
    if not graceful and got.status_before in IN_FLIGHT:
        report_cascade(child, got.cancelled, got.truncated, max_depth)
        ex.host.check_cancelled()
    ex.kick()
    return CancelResult(got.cancelled, status_before=got.status_before, truncated=got.truncated, graceful=graceful,
                        run_id=child)
