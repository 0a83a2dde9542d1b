"""Signals, cancellation, continue-as-new, child retries and execution timeouts: the
engine side of everything that ends, pauses or renews a run (the SQL lives in
sql/0002_lifecycle.sql).

Cancellation is one transaction (``durable_cancel``): the run's parent is locked, then
the run, then its in-flight descendants generation by generation, bounded by
``max_child_depth``. Every cancelled run loses its lease, so a still-running executor
fails its next journal write; to stop it *now*, the cascade sends one
``cancel|<owner>`` notification per process that held a cancelled run, and that
process runs one heartbeat (which finds the lost leases and stops those executions)
and checks its parked runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from ..store import connections as db, queries
from ..observe import hooks
from .. import serde
from ..errors import ConfigurationError, DurableError, RunNotFoundError
from .execution import DatabaseLost, Event, LeaseLost
from .journal import split_key

if TYPE_CHECKING:
    from .context import ChildRef, Context
    from ..engine import Engine
    from .execution import ContinueAsNew, Execution

log = logging.getLogger("durable.lifecycle")

IN_FLIGHT = ("pending", "running", "suspended")

CANCEL = "SELECT cancelled, truncated, status_before, live_id FROM durable_cancel(%s, %s, %s, %s)"
CANCEL_CHILD = "SELECT ok, cancelled, truncated, status_before FROM durable_cancel_child(%s, %s, %s, %s, %s, %s, %s, %s)"
CONTINUE = "SELECT durable_continue(%s, %s, %s, %s, %s, %s::jsonb)"
# Expire overdue runs, and say how long until the earliest remaining deadline (a probe of
# the partial deadline index; read with the statement's snapshot, so right after runs
# expired it may still name theirs: the loop then simply looks again at once).
EXPIRE = """SELECT durable_expire_runs(%s, %s),
       (SELECT extract(epoch FROM min(deadline_at) - durable_now())::float8 FROM durable_runs
         WHERE deadline_at IS NOT NULL AND finished_at IS NULL)"""
FINISHED_AMONG = """
SELECT id FROM durable_runs WHERE id = ANY(%s) AND status IN ('completed', 'failed', 'cancelled', 'continued')
"""


class RunFinishedError(DurableError):
    """The run already finished; signals go to running runs only."""


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


def _signal_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigurationError(f"signal name must be a non-empty string (at most 200 characters), got {name!r}")
    return name


def _run_uuid(value: Any) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ConfigurationError(f"{value!r} is not a run id (a UUID)") from None


def _signal_error(code: str | None, message: str, run_id: uuid.UUID) -> DurableError | None:
    if code == "DU003":
        return RunNotFoundError(run_id)
    if code == "DU004":
        return RunFinishedError(f"{message}. Check the run's status before signalling it, or start a new run")
    return None


class Lifecycle:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._checking = False
        self._check_again = False
        self.next_deadline_in: float | None = None

    # --- signals -------------------------------------------------------------------------

    async def signal(self, run_id: uuid.UUID, name: str, payload: Any, delivery_id: str | None) -> bool:
        """Send a signal from outside any workflow; False when ``delivery_id`` was already
        delivered to this run (or an earlier link of its chain)."""
        e = self.engine
        e._require_open()
        _signal_name(name)
        if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id or len(delivery_id) > 500):
            raise ConfigurationError(f"delivery_id must be a non-empty string of at most 500 characters, "
                                     f"got {delivery_id!r}")
        text = serde.dumps(payload, what=f"payload of signal {name!r}", limit=e.settings.payload_limit_bytes)

        async def send(conn: Any) -> bool:
            row = await (await conn.execute(queries.SEND_SIGNAL, (run_id, name, text, delivery_id))).fetchone()
            return bool(row and row[0])

        try:
            return await db.run_retrying(e.pool, send, what=f"signal {name!r} to run {run_id}")
        except psycopg.Error as exc:
            err = _signal_error(exc.sqlstate, (exc.diag.message_primary or str(exc)), run_id)
            if err is not None:
                raise err from None
            raise db.typed_error(exc, f"signal {name!r} to run {run_id}") from exc

    async def signal_from(self, ctx: "Context", target: Any, name: str, payload: Any) -> None:
        """``ctx.signal``: send a signal from inside a workflow, journaled. The delivery id
        is derived from this run and the call's position, so a replay (or a crash between
        sending and journaling) never delivers it twice."""
        ex = ctx._ex
        target_id = _run_uuid(target)
        _signal_name(name)
        text = serde.dumps(payload, what=f"payload of signal {name!r}", limit=ex.settings.payload_limit_bytes)
        pos = await ctx._op()
        found = f"signal {name!r} to run {target_id}"
        evs = ex.expect(pos, ("signal_sent",), name, found)
        if evs:
            data = evs[0].data
            if data.get("target") != str(target_id):
                raise ex.nondeterminism(pos, f"signal {name!r} to run {data.get('target')}", found)
            if data.get("error"):
                raise _signal_error(data["error"]["code"], data["error"]["message"], target_id) or \
                    DurableError(data["error"]["message"])
            return
        delivery = f"{ex.run_id}:{pos}"
        error: dict[str, str] | None = None

        async def send(conn: Any) -> None:
            await conn.execute(queries.SEND_SIGNAL, (target_id, name, text, delivery))

        ex.begin_busy()  # the driver must not suspend the run while this is in flight
        try:
            await ex.flush()
            try:
                await db.run_retrying(ex.engine.pool, send, what=f"signal {name!r} to run {target_id}")
            except psycopg.OperationalError as exc:
                raise ex.halt(DatabaseLost()) from exc  # this execution stops; the run resumes later
            except psycopg.Error as exc:
                if _signal_error(exc.sqlstate, "", target_id) is None:
                    raise
                error = {"code": exc.sqlstate or "", "message": exc.diag.message_primary or str(exc)}
            await ex.append(pos, "signal_sent", name, {"target": str(target_id), "delivery_id": delivery,
                                                       **({"error": error} if error else {})})
        finally:
            ex.end_busy()
        if error is not None:
            raise _signal_error(error["code"], error["message"], target_id)  # type: ignore[misc]

    # --- cancellation --------------------------------------------------------------------

    async def cancel(self, run_id: uuid.UUID, *, graceful: bool, reason: str) -> CancelResult:
        e = self.engine
        e._require_open()
        if not isinstance(graceful, bool):
            raise ConfigurationError(f"graceful must be True or False, got {graceful!r}")
        if not isinstance(reason, str) or not reason or len(reason) > 200:
            raise ConfigurationError(f"reason must be a non-empty string of at most 200 characters, got {reason!r}")
        started = time.perf_counter()

        async def cancel(conn: Any) -> Any:
            cur = await conn.execute(CANCEL, (run_id, graceful, reason, e.settings.max_child_depth))
            return await cur.fetchone()

        try:
            cancelled, truncated, before, live = await db.run_retrying(e.pool, cancel, what=f"cancel of run {run_id}")
        except psycopg.Error as exc:
            if exc.sqlstate == "DU003":
                raise RunNotFoundError(run_id) from None
            raise db.typed_error(exc, f"cancel of run {run_id}") from exc
        res = CancelResult(cancelled, status_before=before, truncated=truncated, graceful=graceful, run_id=live)
        if res.already_finished:
            log.info("cancel of run %s: it had already %s; nothing to do", run_id, before)
            return res
        if graceful:
            log.info("run %s was asked to cancel; it sees CancellationRequested at its next await", live)
            return res
        log.info("cancelled run %s and %d descendant(s) in %.3f s", live, cancelled - 1, time.perf_counter() - started)
        if hooks.listening("run.cancelled"):  # one label lookup, only when someone listens
            async with e.pool.connection() as conn:
                row = await (await conn.execute(queries.CANCELLED_RUN_LABELS, (live,))).fetchone()
            if row is not None:
                hooks.emit("run.cancelled", run_id=row[0], workflow=row[1], queue=row[2], reason=reason)
        self._report_cascade(run_id, cancelled, truncated)
        self._stop_local()
        return res

    def _report_cascade(self, run_id: uuid.UUID, cancelled: int, truncated: int) -> None:
        limit = self.engine.settings.max_child_depth
        hooks.emit("cascade.completed", run_id=run_id, cancelled=cancelled)
        if truncated:
            log.warning("cancel of run %s: %d in-flight descendant(s) more than max_child_depth=%d levels below "
                        "it were not cancelled; cancel them separately or raise max_child_depth",
                        run_id, truncated, limit)
            hooks.emit("cascade.truncated", run_id=run_id, depth_limit=limit, truncated=truncated)

    async def cancel_child(self, ctx: "Context", ref: "ChildRef", graceful: bool) -> CancelResult:
        """``ctx.cancel_child``: cancel (or ask to cancel) one of this run's children. The
        cancel and its journal event are one transaction under the parent's lease."""
        ex = ctx._ex
        if not isinstance(graceful, bool):
            raise ConfigurationError(f"graceful must be True or False, got {graceful!r}")
        ctx._check_refs([ref])
        pos = await ctx._op()
        found = f"cancel_child {ref.run_id}"
        evs = ex.expect(pos, ("child_cancel",), None, found)
        if evs:
            d = evs[0].data
            if d.get("child_id") != str(ref.run_id):
                raise ex.nondeterminism(pos, f"cancel_child {d.get('child_id')}", found)
            return CancelResult(d["cancelled"], status_before=d["status_before"], truncated=d.get("truncated", 0),
                                graceful=d["graceful"], run_id=ref.run_id)
        col_pos, op = split_key(pos)
        ex.begin_busy()
        try:
            async with ex.write() as (conn, token, seq):
                cur = await conn.execute(CANCEL_CHILD, (ex.run_id, token, ref.run_id, graceful, seq, col_pos, op,
                                                        ex.settings.max_child_depth))
                ok, cancelled, truncated, before = await cur.fetchone()  # type: ignore[misc]
                if not ok:
                    ex._lost()
        finally:
            ex.end_busy()
        data = {"child_id": str(ref.run_id), "graceful": graceful, "cancelled": cancelled,
                "truncated": truncated, "status_before": before}
        ex._index(Event(seq, col_pos, "child_cancel", None, data, op))
        if not graceful and before in IN_FLIGHT:
            self._report_cascade(ref.run_id, cancelled, truncated)
            self._stop_local()
        ex.kick()
        return CancelResult(cancelled, status_before=before, truncated=truncated, graceful=graceful,
                            run_id=ref.run_id)

    # --- stopping executions of cancelled runs ------------------------------------------

    def on_cancel_notification(self, payload: str) -> None:
        """'cancel|<owner>': runs of that owner were cancelled; 'cancel|<run>': a graceful request."""
        e = self.engine
        if payload == e.owner:
            self._stop_local()
            return
        try:
            run_id = uuid.UUID(payload)
        except ValueError:
            return
        ex = e.active.get(run_id)
        if ex is not None:
            ex.cancel_requested = True
            ex.kick()

    def _stop_local(self) -> None:
        """Check (once, coalescing bursts of notifications) which executions here lost their run."""
        e = self.engine
        if not (e.active or e.parked or e.loading):
            return
        if self._checking:
            self._check_again = True
            return
        self._checking = True
        e._spawn(self._check_loop())

    async def _check_loop(self) -> None:
        e = self.engine
        extra = 0
        try:
            while True:
                self._check_again = False
                try:
                    await self._check_local()
                except Exception as exc:  # the heartbeat catches what this misses
                    log.warning("checking for cancelled runs failed (%s); the next heartbeat stops them", exc)
                    return
                if e.loading and extra < 4:
                    # runs being loaded were claimed before the cancel: look again once they run
                    extra += 1
                    await asyncio.sleep(0.2)
                    continue
                if not self._check_again:
                    return
        finally:
            self._checking = False

    async def _check_local(self) -> None:
        """One heartbeat stops executions whose lease is gone; parked runs are checked in
        one query, at the same time."""
        e = self.engine
        checks = []
        if e.heartbeat is not None and e.active:
            checks.append(e.heartbeat.beat())
        if e.parked and e.pool is not None:
            checks.append(self._drop_finished_parked(list(e.parked)))
        if checks:
            await asyncio.gather(*checks)

    async def _drop_finished_parked(self, parked: list[uuid.UUID]) -> None:
        e = self.engine
        async with e.pool.connection() as conn:
            cur = await conn.execute(FINISHED_AMONG, (parked,))
            done = await cur.fetchall()
        for (rid,) in done:
            ex = e.parked.pop(rid, None)
            if ex is not None:
                timer = e._timers.pop(rid, None)
                if timer is not None:
                    timer.cancel()
                ex.stop(LeaseLost())

    # --- continue-as-new and retries ---------------------------------------------------

    async def continue_as_new(self, ex: "Execution", can: "ContinueAsNew") -> None:
        e = self.engine
        token = ex.token
        if token is None:
            return
        new_id = uuid.uuid5(ex.run_id, "continue-as-new")
        async with ex.conn() as conn:
            row = await (await conn.execute(CONTINUE, (ex.run_id, token, new_id, can.workflow.name,
                                                       can.workflow.version, can.input_json))).fetchone()
        ex.token = None
        if not row or not row[0]:
            hooks.emit("lease.lost", run_id=ex.run_id, workflow=ex.wf.name)
            return
        hooks.emit("run.continued", run_id=ex.run_id, workflow=ex.wf.name, queue=ex.queue,
                   successor_run_id=new_id, duration_s=time.monotonic() - ex.started_mono)
        hooks.emit("run.started", run_id=new_id, workflow=can.workflow.name, queue=ex.queue,
                   parent_run_id=ex.parent_id)
        e._wake_result_waiters(ex.run_id)
        if e.settings.execute and not e.closing:
            e._spawn(e.claim_one(new_id, "local"))

    def attempt_retried(self, ex: "Execution", error: str | None) -> None:
        """The run failed and its retry policy re-runs it as a new attempt (durable_finish
        made this run 'continued' and inserted the successor, due after the retry delay)."""
        successor = retry_run_id(ex.run_id)
        err = json.loads(error or "{}")
        log.info("run %s (attempt %d) failed with %s; its retry policy re-runs it as run %s",
                 ex.run_id, ex.attempt, err.get("type"), successor)
        hooks.emit("run.continued", run_id=ex.run_id, workflow=ex.wf.name, queue=ex.queue,
                   successor_run_id=successor, duration_s=time.monotonic() - ex.started_mono,
                   reason="retry", error_type=err.get("type"))
        hooks.emit("run.started", run_id=successor, workflow=ex.wf.name, queue=ex.queue, parent_run_id=ex.parent_id)
        self.engine._wake_result_waiters(ex.run_id)  # outside waiters re-read and follow the chain
        # the successor is due after its backoff: claim it then, not at the next poll
        self.engine.claim_when_due(successor, ex.queue)

    # --- execution timeouts ------------------------------------------------------------

    async def expire_overdue(self, limit: int = 100) -> int:
        """Fail runs past their execution timeout (one transaction); returns how many.
        ``next_deadline_in`` is then the seconds until the earliest deadline left (None: none)."""
        e = self.engine
        async with e.pool.connection() as conn:
            row = await (await conn.execute(EXPIRE, (limit, e.settings.max_child_depth))).fetchone()
        n = int(row[0]) if row else 0
        self.next_deadline_in = None if row is None or row[1] is None else float(row[1])
        if n:
            log.info("%d run(s) exceeded their execution timeout and failed with WorkflowTimeoutError", n)
            self._stop_local()
        return n


def retry_run_id(run_id: uuid.UUID) -> uuid.UUID:
    """The run id of the next attempt of a failed run (durable_derived_id in SQL)."""
    h = bytearray(hashlib.md5(f"{run_id}|retry".encode()).digest())
    h[6] = (h[6] & 0x0F) | 0x30
    h[8] = (h[8] & 0x0F) | 0x80
    return uuid.UUID(bytes=bytes(h))

