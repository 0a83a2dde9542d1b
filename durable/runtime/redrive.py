"""Re-driving runs: resume a failed, cancelled or timed-out run where it failed, restart it
as a new run with the same input, fork a new run from the first N events of its history.

* **resume** (``durable_resume``, sql/0008_redrive.sql): the run keeps its id and history. A
  ``resumed`` event records the previous status and error and supersedes the tail of the
  history from the run's first failure that replay would raise again (a failed step, a failed
  or cancelled child's outcome, an observed cancel request): replay skips superseded events
  (:func:`durable.runtime.journal.replayable`), so those operations run again while every
  operation before them replays from the journal. Failed or cancelled children whose outcome
  the kept history does not hold re-run as a new attempt, the way a child's retry policy
  re-runs it. The transaction bumps the run's lease epoch: an executor still holding an old
  lease writes nothing. Only top-level runs resume (a child is re-run by resuming its root).
* **restart**: a new top-level run of the same workflow, version, queue and input.
* **fork**: the same, with the first ``at`` events of the history (positions as ``durable
  show`` numbers them); the operations after them run again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from ..errors import ConfigurationError, ForkPositionError
from ..observe import hooks
from ..store import redrive as store_redrive
from ..store.connections import Conn, Pool, run_typed
from ..store.rows import Forked, RedriveCandidate, Resumed

log = logging.getLogger(__name__)

RESUMABLE = ("failed", "cancelled")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


async def resume(pool: Pool, run_id: uuid.UUID, *, max_depth: int) -> Resumed:
    """Resume ``run_id`` (the live link of its chain) in one transaction."""

    async def go(conn: Conn) -> Resumed:
        return await store_redrive.resume(conn, run_id, max_depth=max_depth)

    res = await run_typed(pool, go, what=f"resume of run {run_id}")
    log.info("run %s resumed (it was %s; %d event(s) superseded from seq %d; %d child(ren) re-run)",
             res.run_id, res.previous_status, res.superseded, res.superseded_from, len(res.rerun),
             extra={"run_id": str(res.run_id), "workflow": res.workflow, "previous_status": res.previous_status,
                    "superseded": res.superseded, "rerun_children": len(res.rerun)})
    hooks.emit("run.redriven", run_id=res.run_id, workflow=res.workflow, action="resume", origin_run_id=run_id,
               previous_status=res.previous_status, rerun_children=len(res.rerun))
    return res


async def fork(pool: Pool, run_id: uuid.UUID, *, at: int, kind: str = "fork") -> Forked:
    """A new top-level run from ``run_id``'s workflow and input and the first ``at`` events
    of its history (``kind`` 'restart' with ``at`` 0)."""
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ForkPositionError(
            f"fork position must be a whole number of history events >= 0 (0: no history, like restart), got "
            f"{at!r}; `durable show {run_id}` numbers the events", run_id=run_id, at=-1, history_length=None)
    new_id = uuid.uuid4()

    async def go(conn: Conn) -> Forked:
        return await store_redrive.fork(conn, run_id, at=at, new_id=new_id, kind=kind)

    res = await run_typed(pool, go, what=f"{kind} of run {run_id}")
    log.info("run %s %s as run %s (%d event(s) of history kept)", run_id,
             "restarted" if kind == "restart" else f"forked at {at}", res.run_id, res.copied,
             extra={"run_id": str(res.run_id), "workflow": res.workflow, "origin_id": str(run_id),
                    "origin_kind": kind})
    hooks.emit("run.redriven", run_id=res.run_id, workflow=res.workflow, action=kind, origin_run_id=run_id)
    hooks.emit("run.started", run_id=res.run_id, workflow=res.workflow, queue=res.queue, parent_run_id=None)
    return res


def like_pattern(glob: str | None) -> str:
    """A workflow glob (``*`` any text, ``?`` one character) as a LIKE pattern."""
    if not glob:
        return "%"
    out = []
    for ch in glob:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


async def candidates(pool: Pool, *, statuses: list[str], workflow: str | None = None,
                     since: datetime | None = None, limit: int = 100) -> list[RedriveCandidate]:
    """Top-level runs a bulk resume/restart would take: ``statuses``, a workflow glob,
    created at or after ``since``; newest first, at most ``limit``. (One small query on an
    index of creation time; a general search may replace it.)"""
    if not statuses:
        raise ConfigurationError("choose at least one status (e.g. failed)")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit must be a whole number >= 1, got {limit!r}")

    async def go(conn: Conn) -> list[RedriveCandidate]:
        return await store_redrive.candidates(conn, statuses=statuses, pattern=like_pattern(workflow),
                                              since=since or _EPOCH, limit=limit)

    return await run_typed(pool, go, what="selecting runs to re-drive")
