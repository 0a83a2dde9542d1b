"""Re-driving runs: resume a failed or cancelled run under its id, restart or fork it as a
new run, and pick candidates for the CLI's bulk forms.

Each function runs one named statement of ``queries/redrive.sql`` (the transactions are
``durable_resume`` and ``durable_fork`` in ``sql/0008_redrive.sql``) and returns typed rows;
the database's refusals come out as typed errors (nothing written).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from ..errors import DurableError, ForkPositionError, RunNotFoundError, RunNotResumableError
from .connections import Conn
from .rows import Forked, RedriveCandidate, Resumed
from .statements import q

_IN_FLIGHT = ("pending", "running", "suspended")


def _message(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary if exc.diag else None) or str(exc)


def _refusal(exc: psycopg.Error, run_id: uuid.UUID, at: int | None = None) -> DurableError | None:
    """The typed error for a refusal of durable_resume / durable_fork, else None."""
    if exc.sqlstate == "DU003":
        return RunNotFoundError(run_id)
    if exc.sqlstate == "DU081":
        status = exc.diag.message_detail if exc.diag else None
        if status == "completed":
            fix = ("only a failed, cancelled or timed-out run can be resumed; to run it again use restart "
                   "(a new run with the same input) or fork --at N (a new run from its first N operations)")
        elif status in _IN_FLIGHT:
            fix = ("it is still in flight (or was resumed already): wait for it to end, or cancel it and then "
                   "resume it")
        else:
            fix = "only a failed, cancelled or timed-out run can be resumed; restart or fork it instead"
        return RunNotResumableError(f"{_message(exc)}: {fix}", run_id=run_id, status=status)
    if exc.sqlstate == "DU082":
        return RunNotResumableError(_message(exc), run_id=run_id, status=None)
    if exc.sqlstate == "DU083":
        length = int(exc.diag.message_detail) if exc.diag and exc.diag.message_detail else None
        return ForkPositionError(f"{_message(exc)}: choose --at between 0 and {length}", run_id=run_id,
                                 at=at if at is not None else -1, history_length=length)
    return None


async def resume(conn: Conn, run_id: uuid.UUID, *, max_depth: int) -> Resumed:
    """Resume the live link of ``run_id``'s chain (one transaction, see durable_resume)."""
    cur = conn.cursor(row_factory=dict_row)
    try:
        await cur.execute(q("resume_run"), {"id": run_id, "max_depth": max_depth})
    except psycopg.Error as exc:
        err = _refusal(exc, run_id)
        if err is not None:
            raise err from None
        raise
    row = await cur.fetchone()
    assert row is not None
    return Resumed(run_id=row["run_id"], tree_key=row["tree_key"], workflow=row["workflow"], queue=row["queue"],
                   previous_status=row["previous_status"], superseded_from=row["superseded_from"],
                   superseded=row["superseded"], rerun=list(row["rerun"] or []), marker_seq=row["marker_seq"])


async def fork(conn: Conn, run_id: uuid.UUID, *, at: int, new_id: uuid.UUID, kind: str) -> Forked:
    """A new top-level run ``new_id`` from ``run_id``'s workflow and input and the first
    ``at`` events of its history (``kind`` 'restart' with ``at`` 0, or 'fork')."""
    cur = conn.cursor(row_factory=dict_row)
    try:
        await cur.execute(q("fork_run"), {"id": run_id, "at": at, "new": new_id, "kind": kind})
    except psycopg.Error as exc:
        err = _refusal(exc, run_id, at)
        if err is not None:
            raise err from None
        raise
    row = await cur.fetchone()
    assert row is not None
    return Forked(run_id=row["run_id"], tree_key=row["tree_key"], workflow=row["workflow"], queue=row["queue"],
                  copied=row["copied"], history_length=row["history_length"])


async def candidates(conn: Conn, *, statuses: list[str], pattern: str, since: datetime,
                     limit: int) -> list[RedriveCandidate]:
    """Top-level runs with one of ``statuses``, a workflow name matching the LIKE
    ``pattern``, created at or after ``since``; newest first, at most ``limit``."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("redrive_candidates"), {"statuses": statuses, "pattern": pattern, "since": since,
                                                "limit": limit})
    return [RedriveCandidate(id=r["id"], workflow=r["workflow"], status=r["status"], created_at=r["created_at"],
                             error=r["error"]) for r in await cur.fetchall()]
