"""The journal of one run, as this process writes it: history lookups for replay and
fenced writes. Every write checks the lease token in the same statement (FOR SHARE on the
run row), so a process that lost its lease writes nothing and stops; database errors stop
the execution (the run resumes from its journal elsewhere) rather than failing the run.
Step and child outcomes are buffered until the next durable point (see append_raw).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import psycopg
import psycopg_pool

from . import hooks, queries, serde
from .errors import ChildDepthError, HistoryLimitError, NonDeterminismError, RunConflictError
from .registry import WorkflowDef

if TYPE_CHECKING:
    from .config import EngineSettings
    from .engine import Engine

log = logging.getLogger("durable.executor")


class _Stop(BaseException):
    """Unwinds a workflow coroutine that must stop executing here (not a failure)."""

    reason = "stop"


class LeaseLost(_Stop):
    reason = "lease_lost"


class Evicted(_Stop):
    reason = "evicted"


class Shutdown(_Stop):
    reason = "shutdown"


class DatabaseLost(_Stop):
    """The database became unreachable mid-execution. The run is not failed: this
    execution stops, the lease expires, and the run resumes from its journal."""

    reason = "database"


class Stale(_Stop):
    """Another process advanced the run while it was parked here: replay from the journal."""

    reason = "stale"

    def __init__(self, claim: dict[str, Any]) -> None:
        super().__init__()
        self.claim = claim


class ContinueAsNew(BaseException):
    """Raised by ctx.continue_as_new(); ends the run as `continued`."""

    def __init__(self, input_json: str, workflow: WorkflowDef) -> None:
        super().__init__()
        self.input_json = input_json
        self.workflow = workflow


@dataclass(slots=True)
class Event:
    seq: int
    pos: int | None
    kind: str
    name: str | None
    data: dict[str, Any]


Pending = tuple[int, "int | None", str, "str | None", str, "Callable[[], None] | None"]


async def write_pending(conn: Any, run_id: uuid.UUID, token: int, pending: list[Pending]) -> bool:
    """Write buffered events under the lease token (fenced); False when the lease is lost
    (nothing written). Each event's on-written callback runs once it is journaled."""
    if not pending:
        return True
    if len(pending) == 1:
        seq, pos, kind, name, text, _ = pending[0]
        cur = await conn.execute(queries.APPEND_EVENT, (seq, pos, kind, name, text, run_id, token))
    else:
        cur = await conn.execute(queries.APPEND_EVENTS, (
            run_id, token, [p[0] for p in pending], [p[1] for p in pending], [p[2] for p in pending],
            [p[3] for p in pending], [p[4] for p in pending]))
    if cur.rowcount != len(pending):
        return False
    for p in pending:
        if p[5] is not None:
            p[5]()
    return True


class Journal:
    """History and fenced writes of one execution (the base of :class:`Execution`)."""

    engine: "Engine"
    settings: "EngineSettings"
    run_id: uuid.UUID
    wf: WorkflowDef
    token: int | None
    stopping: "_Stop | None"
    nondeterministic: NonDeterminismError | None
    by_pos: dict[int, list[Event]]
    max_pos: int
    next_seq: int
    child_pos: dict[uuid.UUID, int]
    _pending: list[Pending]


    def _index(self, ev: Event) -> None:
        if ev.pos is not None:
            self.by_pos.setdefault(ev.pos, []).append(ev)
            self.max_pos = max(self.max_pos, ev.pos)
        self.next_seq = max(self.next_seq, ev.seq + 1)

    def nondeterminism(self, pos: int, expected: str, found: str) -> NonDeterminismError:
        """Record (and return, to raise) a mismatch between code and history. The run fails
        with it even if the workflow code catches it."""
        exc = NonDeterminismError(self.run_id, pos, expected, found)
        if self.nondeterministic is None:
            self.nondeterministic = exc
        return exc

    def expect(self, pos: int, kinds: tuple[str, ...], name: str | None, found: str) -> list[Event] | None:
        """The events journaled at ``pos``, checked against what the code does now."""
        evs = self.by_pos.get(pos)
        if not evs:
            return None
        first = evs[0]
        if first.kind not in kinds or (name is not None and first.name != name):
            raise self.nondeterminism(pos, f"{first.kind} {first.name!r}", found)
        return evs

    @property
    def history_length(self) -> int:
        return self.next_seq - 1

    # --- fenced writes ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Any]:
        """A pooled connection; infrastructure errors stop this execution (the run is
        resumed from its journal after lease expiry) instead of failing the run."""
        try:
            async with self.engine.pool.connection() as conn:
                if self._pending:
                    await self._flush_on(conn)
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # a lost connection or server restart hits every execution at once: the engine's
            # loops log the outage once, so per-run lines stay at debug for those
            state = getattr(exc, "sqlstate", None)
            outage = state is None or state.startswith(("08", "57P"))
            log.log(logging.DEBUG if outage else logging.WARNING,
                    "run %s: database error (%s); stopping this execution, the run resumes later",
                    self.run_id, exc)
            raise DatabaseLost() from exc

    def _check_live(self) -> int:
        if self.stopping is not None:
            raise self.stopping
        if self.token is None:
            raise LeaseLost()
        return self.token

    def _take_seq(self, n: int = 1) -> int:
        first = self.next_seq
        if first + n - 1 > self.settings.history_limit:
            raise HistoryLimitError(
                f"run {self.run_id} reached the history limit of {self.settings.history_limit} events; "
                "end long loops with ctx.continue_as_new(...) (ctx.history_length tells how close you are) "
                "or raise history_limit"
            )
        self.next_seq += n
        return first

    async def append(self, pos: int | None, kind: str, name: str | None, data: dict[str, Any]) -> Event:
        token = self._check_live()
        text = serde.dumps(data, what=f"{kind} event", limit=self.settings.payload_limit_bytes * 2 + 4096)
        seq = self._take_seq()
        async with self.conn() as conn:
            cur = await conn.execute(queries.APPEND_EVENT, (seq, pos, kind, name, text, self.run_id, token))
            if cur.rowcount != 1:
                self._lost()
        ev = Event(seq, pos, kind, name, json.loads(text))
        self._index(ev)
        return ev

    async def append_raw(self, pos: int | None, kind: str, name: str | None, text: str,
                         on_written: Callable[[], None] | None = None) -> None:
        """Journal an outcome (data already JSON text) at the next durable point: before the
        next database access or step (see flush), or in the run's terminal transaction when
        the workflow ends right after it. Nothing durable can depend on it before then, so
        a crash in between only means the outcome is observed again (a step re-runs, a
        child's terminal state is re-read): a short run costs one commit less."""
        self._check_live()
        seq = self._take_seq()
        self._pending.append((seq, pos, kind, name, text, on_written))
        self._index(Event(seq, pos, kind, name, {}))

    async def flush(self) -> None:
        """Write buffered outcomes now (before a step's side effects, or a release)."""
        if self._pending:
            async with self.conn():
                pass

    async def _flush_on(self, conn: Any) -> None:
        pending, self._pending = self._pending, []
        token = self._check_live()
        if not await write_pending(conn, self.run_id, token, pending):
            self._lost()

    async def append_timer(self, pos: int | None, kind: str, name: str | None,
                           data: dict[str, Any], delay: float) -> float:
        """Journal a timer event whose fire time comes from the database clock."""
        token = self._check_live()
        seq = self._take_seq()
        async with self.conn() as conn:
            cur = await conn.execute(queries.APPEND_TIMER_EVENT, {
                "seq": seq, "pos": pos, "kind": kind, "name": name, "data": json.dumps(data),
                "delay": delay, "id": self.run_id, "token": token})
            row = await cur.fetchone()
        if row is None:
            self._lost()
        fire_at = float(row[0])  # type: ignore[index]
        self._index(Event(seq, pos, kind, name, {**data, "fire_at": fire_at}))
        return fire_at

    async def start_children(self, specs: list[dict[str, Any]]) -> None:
        """Insert child rows and their child_started events in one fenced transaction."""
        from psycopg import errors as pgerr

        token = self._check_live()
        first = self._take_seq(len(specs))
        for i, s in enumerate(specs):
            s["seq"] = first + i
            s["max_depth"] = self.settings.max_child_depth
        body = json.dumps([{**s, "id": str(s["id"]), "input": json.loads(s["input"])} for s in specs])
        try:
            async with self.conn() as conn:
                cur = await conn.execute(queries.START_CHILDREN, (self.run_id, token, body))
                row = await cur.fetchone()
        except pgerr.RaiseException as exc:  # pragma: no cover - custom SQLSTATEs map below
            raise RunConflictError(str(exc)) from None
        except Exception as exc:
            code = getattr(exc, "sqlstate", None)
            msg = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
            self.next_seq = first  # nothing was written
            if code == "DU001":
                raise RunConflictError(
                    f"{msg}. Child ids derive from the parent, the call site and key=; choose another key "
                    "or site= so the id is unique") from None
            if code == "DU002":
                raise ChildDepthError(f"{msg}. Flatten the tree or raise max_child_depth") from None
            raise
        if not row or not row[0]:
            self._lost()
        for s in specs:
            ev = Event(s["seq"], s["pos"], "child_started", s["workflow"],
                       {"child_id": str(s["id"]), "hash": s["hash"]})
            self._index(ev)
            self.child_pos[s["id"]] = s["pos"]
        self.engine.kick_claimer()

    def _lost(self) -> None:
        self.token = None
        hooks.emit("lease.lost", run_id=self.run_id, workflow=self.wf.name)
        raise LeaseLost()
