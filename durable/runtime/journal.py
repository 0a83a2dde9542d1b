"""The journal of one run, as this process writes it: history lookups for replay and
fenced writes. Every write checks the lease token in the same statement (FOR SHARE on the
run row), so a process that lost its lease writes nothing and stops; database errors stop
the execution (the run resumes from its journal elsewhere) rather than failing the run.
Step and child outcomes are buffered until the next durable point (see append_raw).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import psycopg
import psycopg_pool

from ..observe import hooks
from ..store import queries
from .. import serde
from ..errors import ChildDepthError, HistoryLimitError, NonDeterminismError, RunConflictError
from .registry import WorkflowDef

if TYPE_CHECKING:
    from ..config import EngineSettings
    from ..engine import Engine

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


# An operation's key in the journal: its position (int) in the workflow's main branch, or,
# for an operation of a concurrent branch (a task the workflow created), a string naming
# the branch path and the operation's index in it ("0.1:2"; see branches.py). Keys are
# deterministic however the branches interleave, so a replay finds each outcome again.
Key = int | str


def split_key(key: "Key | None") -> tuple[int | None, str | None]:
    """(pos, op) columns of a key."""
    if isinstance(key, str):
        return None, key
    return key, None


@dataclass(slots=True)
class Event:
    seq: int
    pos: int | None
    kind: str
    name: str | None
    data: dict[str, Any]
    op: str | None = None

    @property
    def key(self) -> "Key | None":
        return self.op if self.op is not None else self.pos


@dataclass(slots=True)
class Pending:
    """An outcome journaled at the next durable point; its seq is given when it is written."""

    key: "Key | None"
    kind: str
    name: str | None
    text: str
    on_written: "Callable[[int], None] | None" = None


async def write_pending(conn: Any, run_id: uuid.UUID, token: int, first_seq: int, pending: list[Pending]) -> bool:
    """Write buffered events as seqs ``first_seq``... under the lease token (fenced); False
    when the lease is lost (nothing written). Each event's on-written callback gets its seq."""
    if not pending:
        return True
    if len(pending) == 1:
        p = pending[0]
        pos, op = split_key(p.key)
        cur = await conn.execute(queries.APPEND_EVENT, (first_seq, pos, op, p.kind, p.name, p.text, run_id, token))
    else:
        cols = [split_key(p.key) for p in pending]
        cur = await conn.execute(queries.APPEND_EVENTS, (
            run_id, token, list(range(first_seq, first_seq + len(pending))), [c[0] for c in cols],
            [c[1] for c in cols], [p.kind for p in pending], [p.name for p in pending], [p.text for p in pending]))
    if cur.rowcount != len(pending):
        return False
    for i, p in enumerate(pending):
        if p.on_written is not None:
            p.on_written(first_seq + i)
    return True


class Journal:
    """History and fenced writes of one execution (the base of :class:`Execution`).

    Journal writes are serialised per execution (``_wlock``): a write takes its seqs under
    the lock, so concurrent branches of one workflow never write the same seq or leave a
    gap when one write fails and writes nothing (its seqs are given back)."""

    engine: "Engine"
    settings: "EngineSettings"
    run_id: uuid.UUID
    wf: WorkflowDef
    token: int | None
    stopping: "_Stop | None"
    nondeterministic: NonDeterminismError | None
    by_pos: dict[Key, list[Event]]
    max_pos: int
    next_seq: int
    child_pos: dict[uuid.UUID, Key]
    _pending: list[Pending]
    _wlock: asyncio.Lock
    _wlock_owner: "asyncio.Task[Any] | None"
    io: int

    def _index(self, ev: Event) -> None:
        key = ev.key
        if key is not None:
            self.by_pos.setdefault(key, []).append(ev)
            if isinstance(key, int):
                self.max_pos = max(self.max_pos, key)
        self.next_seq = max(self.next_seq, ev.seq + 1)

    def nondeterminism(self, pos: Key, expected: str, found: str) -> NonDeterminismError:
        """Record (and return, to raise) a mismatch between code and history. The run fails
        with it even if the workflow code catches it."""
        exc = NonDeterminismError(self.run_id, pos, expected, found)
        if self.nondeterministic is None:
            self.nondeterministic = exc
        return exc

    def expect(self, pos: Key, kinds: tuple[str, ...], name: str | None, found: str) -> list[Event] | None:
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
        return self.next_seq - 1 + len(self._pending)

    # --- fenced writes ------------------------------------------------------------------

    def _holds_wlock(self) -> bool:
        return self._wlock_owner is not None and self._wlock_owner is asyncio.current_task()

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Any]:
        """A pooled connection (buffered outcomes written first); infrastructure errors stop
        this execution (the run is resumed from its journal) instead of failing the run."""
        self.io += 1  # the driver does not suspend the run under a statement in flight
        try:
            if self._pending and not self._holds_wlock():
                await self.flush()
            async with self.engine.pool.connection() as conn:
                if self._pending and self._holds_wlock():
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
            raise self.halt(DatabaseLost()) from exc
        finally:
            self.io -= 1

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Hold the journal's write lock (not re-entrant: writes never nest)."""
        async with self._wlock:
            self._wlock_owner = asyncio.current_task()
            try:
                yield
            finally:
                self._wlock_owner = None

    @contextlib.asynccontextmanager
    async def write(self, n: int = 1) -> AsyncIterator[tuple[Any, int, int]]:
        """``(conn, token, first_seq)`` for one fenced write of ``n`` events, under the write
        lock, buffered outcomes written first. If the block raises, its seqs are given back
        (the block must raise when nothing was written)."""
        async with self._locked():
            async with self.conn() as conn:
                token = self._check_live()
                first = self._take_seq(n)
                try:
                    yield conn, token, first
                except BaseException:
                    self.next_seq = first
                    raise

    def halt(self, stop: "_Stop") -> "_Stop":
        """This execution stops here (lease lost, database gone, shutdown): every branch of
        the workflow stops at its next durable point or wait, and whatever the code raises
        on the way out (a TaskGroup's exception group around the stop, say) is not the
        run's outcome. Returns the stop to raise."""
        if self.stopping is None:
            self.stopping = stop
            self._abort_waits(stop)
        return self.stopping

    def _abort_waits(self, stop: "_Stop") -> None:  # overridden by the execution
        pass

    def _check_live(self) -> int:
        if self.stopping is not None:
            raise self.stopping
        if self.token is None:
            raise self.halt(LeaseLost())
        return self.token

    def _check_room(self, n: int) -> None:
        used = self.next_seq - 1 + len(self._pending)
        limit = self.settings.history_limit
        if used + n <= limit:
            return
        if n > 1:  # a batch: start_children journals one event per child now, one per outcome later
            raise HistoryLimitError(
                f"run {self.run_id}: this call needs {n} journal events but only {max(0, limit - used)} of the "
                f"history limit of {limit} are left (a child costs two: its start and its outcome, so one run "
                f"can fan out to about {limit // 2} children); raise Engine(history_limit=...) or split the "
                "fan-out over child workflows that each start a part")
        raise HistoryLimitError(
            f"run {self.run_id} reached the history limit of {limit} events; end long loops with "
            "ctx.continue_as_new(...) (ctx.history_length tells how close you are) or raise "
            "Engine(history_limit=...)")

    def _take_seq(self, n: int = 1) -> int:
        self._check_room(n)
        first = self.next_seq
        self.next_seq += n
        return first

    async def append(self, pos: Key | None, kind: str, name: str | None, data: dict[str, Any]) -> Event:
        text = serde.dumps(data, what=f"{kind} event", limit=self.settings.payload_limit_bytes * 2 + 4096)
        col_pos, op = split_key(pos)
        async with self.write() as (conn, token, seq):
            cur = await conn.execute(queries.APPEND_EVENT, (seq, col_pos, op, kind, name, text, self.run_id, token))
            if cur.rowcount != 1:
                self._lost()
        ev = Event(seq, col_pos, kind, name, json.loads(text), op)
        self._index(ev)
        return ev

    def append_raw(self, pos: Key | None, kind: str, name: str | None, text: str,
                   on_written: Callable[[int], None] | None = None) -> None:
        """Journal an outcome (data already JSON text) at the next durable point: before the
        next database access or step (see flush), or in the run's terminal transaction when
        the workflow ends right after it. Nothing durable can depend on it before then, so
        a crash in between only means the outcome is observed again (a step re-runs, a
        child's terminal state is re-read): a short run costs one commit less. Its seq is
        given when it is written; ``on_written`` receives it."""
        self._check_live()
        self._check_room(1)
        self._pending.append(Pending(pos, kind, name, text, on_written))

    async def flush(self) -> None:
        """Write buffered outcomes now (before a step's side effects, or a release)."""
        if not self._pending:
            return
        async with self._locked():
            async with self.conn():
                pass

    async def _flush_on(self, conn: Any) -> None:
        """Write every buffered outcome on ``conn`` (the write lock is held)."""
        pending, self._pending = self._pending, []
        token = self._check_live()
        first = self.next_seq
        self.next_seq += len(pending)
        try:
            ok = await write_pending(conn, self.run_id, token, first, pending)
        except BaseException:
            self._pending[:0] = pending
            self.next_seq = first
            raise
        if not ok:
            self._lost()

    async def append_timer(self, pos: Key | None, kind: str, name: str | None,
                           data: dict[str, Any], delay: float) -> float:
        """Journal a timer event whose fire time comes from the database clock."""
        col_pos, op = split_key(pos)
        async with self.write() as (conn, token, seq):
            cur = await conn.execute(queries.APPEND_TIMER_EVENT, {
                "seq": seq, "pos": col_pos, "op": op, "kind": kind, "name": name, "data": json.dumps(data),
                "delay": delay, "id": self.run_id, "token": token})
            row = await cur.fetchone()
            if row is None:
                self._lost()
        fire_at = float(row[0])  # type: ignore[index]
        self._index(Event(seq, col_pos, kind, name, {**data, "fire_at": fire_at}, op))
        return fire_at

    async def start_children(self, specs: list[dict[str, Any]]) -> None:
        """Insert child rows and their child_started events in one fenced transaction."""
        for s in specs:
            s["pos"], s["op"] = split_key(s.pop("key"))
            s["max_depth"] = self.settings.max_child_depth
        async with self.write(len(specs)) as (conn, token, first):
            for i, s in enumerate(specs):
                s["seq"] = first + i
            body = json.dumps([{**s, "id": str(s["id"]), "input": json.loads(s["input"])} for s in specs])
            try:
                cur = await conn.execute(queries.START_CHILDREN, (self.run_id, token, body))
                row = await cur.fetchone()
            except psycopg.Error as exc:
                code = getattr(exc, "sqlstate", None)
                msg = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
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
                       {"child_id": str(s["id"]), "hash": s["hash"]}, s["op"])
            self._index(ev)
            self.child_pos[s["id"]] = ev.key  # type: ignore[assignment]
        self.engine.kick_claimer()

    def _lost(self) -> None:
        self.token = None
        hooks.emit("lease.lost", run_id=self.run_id, workflow=self.wf.name)
        raise self.halt(LeaseLost())
