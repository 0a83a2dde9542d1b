"""Signals, cancellation, continue-as-new, execution timeouts and the engine's clock.

The database refuses with codes the engine raised on purpose (DU003: no such run, DU004:
the run has finished); they come out of here as typed errors.
"""

from __future__ import annotations

import uuid


import psycopg
from psycopg import sql

from ..errors import DurableError, RunFinishedError, RunNotFoundError
from .connections import Conn
from .runs import key_of
from .rows import CancelOutcome, Expired, RunLabels, TimedOut
from .statements import q


def refusal(exc: psycopg.Error, run_id: uuid.UUID) -> DurableError | None:
    """The typed error for a refusal of the engine's own functions, else None."""
    if exc.sqlstate == "DU003":
        return RunNotFoundError(run_id)
    if exc.sqlstate == "DU004":
        message = (exc.diag.message_primary if exc.diag else None) or str(exc)
        return RunFinishedError(f"{message}. Check the run's status before signalling it, or start a new run")
    return None


async def send_signal(conn: Conn, run_id: uuid.UUID, name: str, payload: str, delivery_id: str | None) -> bool:
    """Deliver a signal to the live link of the run's chain and wake it; False when
    ``delivery_id`` was delivered already. Raises RunNotFoundError / RunFinishedError."""
    try:
        row = await (await conn.execute(q("send_signal"), (run_id, name, payload, delivery_id))).fetchone()
    except psycopg.Error as exc:
        err = refusal(exc, run_id)
        if err is not None:
            raise err from None
        raise
    return bool(row and row[0])


async def cancel(conn: Conn, run_id: uuid.UUID, *, graceful: bool, reason: str, max_depth: int) -> CancelOutcome:
    """Cancel the run (the live link of its chain) and its in-flight descendants, or ask it to."""
    try:
        row = await (await conn.execute(q("cancel"), (run_id, graceful, reason, max_depth))).fetchone()
    except psycopg.Error as exc:
        err = refusal(exc, run_id)
        if err is not None:
            raise err from None
        raise
    assert row is not None
    return CancelOutcome(cancelled=row[0], truncated=row[1], status_before=row[2], live_id=row[3])


async def cancel_child(conn: Conn, tree_key: int, parent: uuid.UUID, token: int, child: uuid.UUID, *,
                       graceful: bool, seq: int, pos: int | None, op: str | None, max_depth: int) -> CancelOutcome | None:
    """ctx.cancel_child: the cancel and the parent's child_cancel event, fenced; None when
    the parent's lease is lost (nothing written)."""
    row = await (await conn.execute(q("cancel_child"), (tree_key, parent, token, child, graceful, seq, pos, op,
                                                         max_depth))).fetchone()
    if row is None or not row[0]:
        return None
    return CancelOutcome(cancelled=row[1], truncated=row[2], status_before=row[3], live_id=child)


async def continue_as_new(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, successor: uuid.UUID,
                          workflow: str, version: int, input: str) -> bool:
    """End the run as 'continued' with its successor; False when the lease is lost."""
    row = await (await conn.execute(q("continue_as_new"), (tree_key, run_id, token, successor, workflow, version,
                                                            input))).fetchone()
    return bool(row and row[0])


async def expire_overdue(conn: Conn, limit: int, max_depth: int) -> Expired:
    """Fail runs past their execution timeout (skipping rows others hold), and name the
    runs it expired: the candidates are read with the sweep's own snapshot (before it),
    the expired among them after, by the sweep's clock."""
    row = await (await conn.execute(q("expire_overdue"), (limit, max_depth, limit))).fetchone()
    if row is None:
        return Expired(0, None)
    expired, next_in, now, candidates = int(row[0]), row[1], row[2], row[3] or []
    runs: tuple[TimedOut, ...] = ()
    if expired and candidates:
        keys, ids = [int(c[0]) for c in candidates], [uuid.UUID(c[1]) for c in candidates]
        got = await conn.execute(q("expired_among"), (keys, ids, now))
        runs = tuple(TimedOut(id=r[0], workflow=r[1], attempt=r[2]) for r in await got.fetchall())
    return Expired(expired=expired, next_deadline_in_s=None if next_in is None else float(next_in), runs=runs)


async def run_labels(conn: Conn, run_id: uuid.UUID) -> RunLabels | None:
    """A run's workflow and queue."""
    key = await key_of(conn, run_id)
    row = await (await conn.execute(q("run_labels"), (key, run_id))).fetchone()
    return None if row is None else RunLabels(id=row[0], workflow=row[1], queue=row[2])


async def set_clock_offset(conn: Conn, offset_s: float) -> None:
    """Shift the engine's clock (``durable_now()`` of this schema) by ``offset_s`` seconds
    (testing: timers fire without waiting; leases keep the real clock)."""
    body = f"SELECT now() + make_interval(secs => {float(offset_s)!r})"
    await conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION durable_now() RETURNS timestamptz "
                               "LANGUAGE sql STABLE AS {}").format(sql.Literal(body)))


