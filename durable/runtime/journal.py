"""The journal of one run, as this process reads and writes it.

Reads: the history by operation key, for replay (:meth:`Journal.expect` checks what the
code does now against what the history has). Writes: every write checks the lease token in
the same statement, so a process that lost its lease writes nothing and stops (the
execution is *halted*); a database error halts the execution too (the run resumes from its
journal later) rather than failing the run. Step and child outcomes are buffered until
the next durable point (:meth:`Journal.buffer`).

Writes are serialised per run (one lock): a write takes its seqs under the lock, so
concurrent branches of one workflow never write the same seq or leave a gap when a write
fails and writes nothing (its seqs are given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..config import EngineSettings
from ..errors import HistoryLimitError, NonDeterminismError
from ..observe import hooks
from ..serde import dumps
from ..store import events as store_events
from ..store import runs as store_runs
from ..store import search as store_search
from ..store.connections import UNAVAILABLE, Conn, Pool, is_outage
from ..store.rows import Event, Key, Pending, split_key
from .parked import EVENT_BYTES
from .stops import DatabaseLost, LeaseLost, Stop

log = logging.getLogger(__name__)

_EVENT_LIMIT_EXTRA = 4096  # an event's data is a payload plus bookkeeping


def replayable(history: list[Event]) -> list[Event]:
    """The events replay reads: a ``resumed`` event (written by ``durable_resume``,
    sql/0008_redrive.sql) supersedes the events from its ``superseded_from`` seq up to it.
    They stay in the history (``durable show`` lists them) but replay skips them, so the
    operations there run again; the marker itself is kept (it carries no key)."""
    ranges = [(int(ev.data.get("superseded_from") or ev.seq), ev.seq) for ev in history if ev.kind == "resumed"]
    if not ranges:
        return history
    return [ev for ev in history if not any(lo <= ev.seq < hi for lo, hi in ranges)]


class Journal:
    """History and fenced writes of one execution of one run."""

    def __init__(self, tree_key: int, run_id: uuid.UUID, workflow: str, pool: Pool, settings: EngineSettings,
                 history: list[Event], token: int | None, *, on_halt: Callable[[Stop], None],
                 on_children_started: Callable[[], None]) -> None:
        self.tree_key = tree_key                 # the run's tree (every statement names it)
        self.run_id = run_id
        self.workflow = workflow
        self.pool = pool
        self.settings = settings
        self.token = token                       # the lease epoch held (fences writes); None while not held
        self.stopping: Stop | None = None        # set once: this execution stops
        self.nondeterministic: NonDeterminismError | None = None
        self.by_key: dict[Key, list[Event]] = {}
        self.max_pos = -1                        # the main branch's last journaled position
        self.next_seq = 1
        self.child_keys: dict[uuid.UUID, Key] = {}  # children this run started: id -> operation key
        self.pending: list[Pending] = []        # outcomes journaled at the next durable point
        self.io = 0                              # journal statements in flight
        self.bytes = 0                           # memory its events hold, estimated (see parked.py)
        self._on_halt = on_halt
        self._on_children_started = on_children_started
        self._wlock = asyncio.Lock()
        self._wlock_owner: asyncio.Task[Any] | None = None
        for ev in history:
            self.record(ev)

    # --- history ------------------------------------------------------------------------

    def record(self, ev: Event) -> None:
        """Index an event journaled now or read from history."""
        self.bytes += EVENT_BYTES + ev.size
        key = ev.key
        if key is not None:
            self.by_key.setdefault(key, []).append(ev)
            if isinstance(key, int):
                self.max_pos = max(self.max_pos, key)
        if ev.kind == "child_started":
            self.child_keys[uuid.UUID(ev.data["child_id"])] = key  # type: ignore[assignment]
        self.next_seq = max(self.next_seq, ev.seq + 1)

    def at(self, key: Key) -> list[Event] | None:
        """The events journaled at ``key`` (None when the code is past the history there)."""
        return self.by_key.get(key)

    def nondeterminism(self, key: Key, expected: str, found: str) -> NonDeterminismError:
        """Record (and return, to raise) a mismatch between code and history. The run fails
        with it even if the workflow code catches it."""
        exc = NonDeterminismError(self.run_id, key, expected, found)
        if self.nondeterministic is None:
            self.nondeterministic = exc
        return exc

    def expect(self, key: Key, kinds: tuple[str, ...], name: str | None, found: str) -> list[Event] | None:
        """The events journaled at ``key``, checked against what the code does now."""
        evs = self.by_key.get(key)
        if not evs:
            return None
        first = evs[0]
        if first.kind not in kinds or (name is not None and first.name != name):
            raise self.nondeterminism(key, f"{first.kind} {first.name!r}", found)
        return evs

    @property
    def history_length(self) -> int:
        return self.next_seq - 1 + len(self.pending)

    # --- stopping -----------------------------------------------------------------------

    def halt(self, stop: Stop) -> Stop:
        """This execution stops here (lease lost, database gone, shutdown): every branch of
        the workflow stops at its next durable point or wait, and whatever the code raises
        on the way out (a TaskGroup's exception group around the stop, say) is not the
        run's outcome. Returns the stop to raise."""
        if self.stopping is None:
            self.stopping = stop
            self._on_halt(stop)
        return self.stopping

    def check_live(self) -> int:
        """The lease token, or raise the stop when this execution may not write any more."""
        if self.stopping is not None:
            raise self.stopping
        if self.token is None:
            raise self.halt(LeaseLost())
        return self.token

    def lost(self) -> Stop:
        """The lease was lost (a fenced write wrote nothing): returns the stop to raise."""
        self.token = None
        hooks.emit("lease.lost", run_id=self.run_id, workflow=self.workflow)
        return self.halt(LeaseLost())

    # --- fenced writes ------------------------------------------------------------------

    def _holds_wlock(self) -> bool:
        return self._wlock_owner is not None and self._wlock_owner is asyncio.current_task()

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Conn]:
        """A pooled connection (buffered outcomes written first); infrastructure errors halt
        this execution (the run is resumed from its journal) instead of failing the run."""
        self.io += 1  # the driver does not suspend the run under a statement in flight
        try:
            if self.pending and not self._holds_wlock():
                await self.flush()
            async with self.pool.connection() as conn:
                if self.pending and self._holds_wlock():
                    await self._flush_on(conn)
                yield conn
        except UNAVAILABLE as exc:
            # a lost connection or server restart hits every execution at once: the engine's
            # loops log the outage once, so per-run lines stay at debug for those
            log.log(logging.DEBUG if is_outage(exc) else logging.WARNING,
                    "run %s: database error (%s); stopping this execution, the run resumes later",
                    self.run_id, exc, extra={"run_id": str(self.run_id), "workflow": self.workflow})
            raise self.halt(DatabaseLost()) from exc
        finally:
            self.io -= 1

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the journal's write lock (not re-entrant: writes never nest)."""
        async with self._wlock:
            self._wlock_owner = asyncio.current_task()
            try:
                yield
            finally:
                self._wlock_owner = None

    @contextlib.asynccontextmanager
    async def write(self, n: int = 1) -> AsyncIterator[tuple[Conn, int, int]]:
        """``(conn, token, first_seq)`` for one fenced write of ``n`` events, under the write
        lock, buffered outcomes written first. If the block raises, its seqs are given back
        (the block must raise when nothing was written)."""
        async with self.locked():
            async with self.conn() as conn:
                token = self.check_live()
                first = self.take_seq(n)
                try:
                    yield conn, token, first
                except BaseException:
                    self.next_seq = first
                    raise

    def _check_room(self, n: int) -> None:
        used = self.next_seq - 1 + len(self.pending)
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

    def take_seq(self, n: int = 1) -> int:
        self._check_room(n)
        first = self.next_seq
        self.next_seq += n
        return first

    async def append(self, key: Key | None, kind: str, name: str | None, data: dict[str, Any]) -> Event:
        """Journal one event now."""
        text = dumps(data, what=f"{kind} event", limit=self.settings.payload_limit_bytes * 2 + _EVENT_LIMIT_EXTRA)
        pos, op = split_key(key)
        async with self.write() as (conn, token, seq):
            if not await store_events.append_event(conn, self.tree_key, self.run_id, token, seq, key, kind, name,
                                                   text):
                raise self.lost()
        ev = Event(seq, pos, kind, name, json.loads(text), op, len(text))
        self.record(ev)
        return ev

    def buffer(self, key: Key | None, kind: str, name: str | None, text: str,
               on_written: Callable[[int], None] | None = None) -> None:
        """Journal an outcome (data already JSON text) at the next durable point: before the
        next database access or step (see flush), or in the run's terminal transaction when
        the workflow ends right after it. Nothing durable can depend on it before then, so
        a crash in between only means the outcome is observed again (a step re-runs, a
        child's terminal state is re-read): a short run costs one commit less. Its seq is
        given when it is written; ``on_written`` receives it."""
        self.check_live()
        self._check_room(1)
        self.bytes += EVENT_BYTES + len(text)  # the outcome lives on in the workflow's frames
        self.pending.append(Pending(key, kind, name, text, on_written))

    async def flush(self) -> None:
        """Write buffered outcomes now (before a step's side effects, or a release)."""
        if not self.pending:
            return
        async with self.locked():
            async with self.conn():
                pass

    async def _flush_on(self, conn: Conn) -> None:
        """Write every buffered outcome on ``conn`` (the write lock is held)."""
        pending, self.pending = self.pending, []
        token = self.check_live()
        first = self.next_seq
        self.next_seq += len(pending)
        try:
            ok = await store_events.append_pending(conn, self.tree_key, self.run_id, token, first, pending)
        except BaseException:
            self.pending[:0] = pending
            self.next_seq = first
            raise
        if not ok:
            raise self.lost()

    async def append_timer(self, key: Key | None, kind: str, name: str | None, data: dict[str, Any],
                           delay: float) -> float:
        """Journal a timer event whose fire time (returned, epoch seconds) comes from the
        database clock."""
        pos, op = split_key(key)
        async with self.write() as (conn, token, seq):
            fire_at = await store_events.append_timer_event(conn, self.tree_key, self.run_id, token, seq=seq,
                                                            pos=pos, op=op, kind=kind, name=name, data=data,
                                                            delay=delay)
            if fire_at is None:
                raise self.lost()
        self.record(Event(seq, pos, kind, name, {**data, "fire_at": fire_at}, op))
        return fire_at

    async def set_attributes(self, key: Key, attrs: dict[str, Any]) -> None:
        """Merge search attributes into the run's row and journal them (kind 'attributes'),
        one fenced transaction; their keys are recorded as known first (issue 14)."""
        text = dumps(attrs, what="search attributes", limit=self.settings.payload_limit_bytes)
        pos, op = split_key(key)
        async with self.write() as (conn, token, seq):
            await store_search.add_keys(conn, attrs)
            if not await store_search.set_attributes(conn, self.tree_key, self.run_id, token, seq, pos, op, attrs):
                raise self.lost()
        self.record(Event(seq, pos, "attributes", None, json.loads(text), op, len(text)))

    async def start_children(self, specs: list[dict[str, Any]]) -> None:
        """Insert child rows and their child_started events in one fenced transaction.
        Each spec: id, workflow, version, queue, input (JSON text), key, hash, policy,
        timeout, retry, child_key (the key= the parent gave, stored on the child's row)."""
        for s in specs:
            s["pos"], s["op"] = split_key(s.pop("key"))
            s["max_depth"] = self.settings.max_child_depth
        async with self.write(len(specs)) as (conn, token, first):
            for i, s in enumerate(specs):
                s["seq"] = first + i
            body = [{**s, "id": str(s["id"]), "input": json.loads(s["input"])} for s in specs]
            if not await store_events.start_children(conn, self.tree_key, self.run_id, token, body):
                raise self.lost()
        for s in specs:
            self.record(Event(s["seq"], s["pos"], "child_started", s["workflow"],
                              {"child_id": str(s["id"]), "hash": s["hash"]}, s["op"]))
        self._on_children_started()

    async def finish(self, status: str, result: str | None, error: str | None) -> str:
        """The terminal transaction, with the last buffered outcome's event (one commit; any
        others are written first, on the same connection). Returns 'finished', 'retried',
        'lost' (the lease was lost: nothing written) or 'stopped' (this execution stops:
        nothing was tried)."""
        token = self.token
        if token is None or self.stopping is not None:
            return "stopped"
        async with self.locked():
            last = self.pending.pop() if self.pending else None
            first = self.next_seq
            seq = 0
            try:
                async with self.conn() as conn:
                    if last is None:
                        outcome = await store_runs.finish(conn, self.tree_key, self.run_id, token, status, result,
                                                          error, self.settings.max_child_depth)
                    else:
                        seq = self.take_seq()
                        pos, op = split_key(last.key)
                        outcome = await store_runs.finish_with_event(
                            conn, self.tree_key, self.run_id, token, seq=seq, pos=pos, op=op, kind=last.kind, name=last.name,
                            data=last.text, status=status, result=result, error=error,
                            max_depth=self.settings.max_child_depth)
            except BaseException:
                if last is not None:  # not journaled: its seq is given back with it
                    self.pending.append(last)
                    self.next_seq = first
                raise
        if last is not None and last.on_written is not None and outcome != "lost":
            last.on_written(seq)  # the buffered outcome is journaled now
        if outcome == "lost":
            hooks.emit("lease.lost", run_id=self.run_id, workflow=self.workflow)
        self.token = None
        return outcome

    def take_pending(self) -> tuple[list[Pending], int]:
        """Hand over the buffered outcomes and the seq the first of them gets (a release)."""
        pending, self.pending = self.pending, []
        return pending, self.next_seq
