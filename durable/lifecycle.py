"""Signals, cancellation and continue-as-new: the engine side of everything that ends,
pauses or renews a run (the SQL lives in sql/0002_lifecycle.sql)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from . import hooks, queries, serde
from .errors import ConfigurationError, DurableError, RunNotFoundError
from .executor import LeaseLost

if TYPE_CHECKING:
    from .engine import Engine
    from .executor import ContinueAsNew, Execution

log = logging.getLogger("durable.lifecycle")


class RunFinishedError(DurableError):
    """The run already finished; signals go to running runs only."""


class Lifecycle:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    async def signal(self, run_id: uuid.UUID, name: str, payload: Any, delivery_id: str | None) -> bool:
        e = self.engine
        e._require_open()
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ConfigurationError(f"signal name must be a non-empty string (at most 200 characters), got {name!r}")
        if delivery_id is not None and not isinstance(delivery_id, str):
            raise ConfigurationError(f"delivery_id must be a string, got {delivery_id!r}")
        text = serde.dumps(payload, what=f"payload of signal {name!r}", limit=e.settings.payload_limit_bytes)
        try:
            async with e.pool.connection() as conn:
                row = await (await conn.execute(queries.SEND_SIGNAL, (run_id, name, text, delivery_id))).fetchone()
        except Exception as exc:
            code = getattr(exc, "sqlstate", None)
            if code == "DU003":
                raise RunNotFoundError(run_id) from None
            if code == "DU004":
                raise RunFinishedError(exc.diag.message_primary) from None  # type: ignore[attr-defined]
            raise
        return bool(row and row[0])

    async def cancel(self, run_id: uuid.UUID, *, graceful: bool, reason: str) -> int:
        e = self.engine
        e._require_open()
        try:
            async with e.pool.connection() as conn:
                cur = await conn.execute("SELECT * FROM durable_cancel(%s, %s, %s, %s)",
                                         (run_id, graceful, reason, e.settings.max_child_depth))
                cancelled, truncated, before = await cur.fetchone()  # type: ignore[misc]
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "DU003":
                raise RunNotFoundError(run_id) from None
            raise
        if before not in ("pending", "running", "suspended"):
            log.info("cancel of run %s: it had already %s; nothing to do", run_id, before)
            return 0
        if not graceful:
            hooks.emit("cascade.completed", run_id=run_id, cancelled=cancelled)
            if truncated:
                log.warning("cancel of run %s: %d descendant(s) deeper than max_child_depth=%d were not "
                            "cancelled", run_id, truncated, e.settings.max_child_depth)
                hooks.emit("cascade.truncated", run_id=run_id, depth_limit=e.settings.max_child_depth,
                           truncated=truncated)
            self._stop_local()
        return cancelled

    def on_cancel_notification(self, payload: str) -> None:
        """'cancel|<owner>': runs of that owner were cancelled; 'cancel|<run>': a graceful request."""
        e = self.engine
        if payload == e.owner:
            e._spawn(self._check_local())
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
        if self.engine.active or self.engine.parked:
            self.engine._spawn(self._check_local())

    async def _check_local(self) -> None:
        """Stop executions here whose runs were cancelled: one heartbeat finds the lost
        leases; parked runs are checked in one query."""
        e = self.engine
        if e.heartbeat is not None:
            await e.heartbeat.beat()
        parked = list(e.parked)
        if parked:
            async with e.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id FROM durable_runs WHERE id = ANY(%s) AND status IN ('completed','failed','cancelled')",
                    (parked,))
                for (rid,) in await cur.fetchall():
                    ex = e.parked.pop(rid, None)
                    if ex is not None:
                        ex.stop(LeaseLost())

    async def continue_as_new(self, ex: "Execution", can: "ContinueAsNew") -> None:
        e = self.engine
        token = ex.token
        if token is None:
            return
        new_id = uuid.uuid5(ex.run_id, "continue-as-new")
        async with e.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT durable_continue(%s, %s, %s, %s, %s, %s::jsonb)",
                (ex.run_id, token, new_id, can.workflow.name, can.workflow.version, can.input_json))).fetchone()
        ex.token = None
        if not row or not row[0]:
            hooks.emit("lease.lost", run_id=ex.run_id, workflow=ex.wf.name)
            return
        hooks.emit("run.continued", run_id=ex.run_id, workflow=ex.wf.name, queue=ex.wf.queue,
                   successor_run_id=new_id)
        e._wake_result_waiters(ex.run_id)
        if e.settings.execute and not e.closing:
            e._spawn(e.claim_one(new_id, "local"))

    async def expire_overdue(self, limit: int = 100) -> int:
        e = self.engine
        async with e.pool.connection() as conn:
            row = await (await conn.execute("SELECT durable_expire_runs(%s, %s)",
                                            (limit, e.settings.max_child_depth))).fetchone()
        return int(row[0]) if row else 0


def error_json(exc: BaseException) -> str:
    return json.dumps(serde.error_doc(exc))
