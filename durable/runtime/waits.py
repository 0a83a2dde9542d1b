"""Waits and wakes, the parent's side: what a suspended run reads when it is woken.

Operations that wait (children, timers, signals, other runs) register a :class:`Waiter`.
The execution's driver (durable/runtime/execution.py) evaluates all waiters in one pass
(:meth:`Waits.evaluate`): it reads the outcomes of this run's children that finished since
its last look (fan-in: O(new outcomes), through the children's "unread" flags), the
terminal states of other runs it waits on (M:N), consumes signals and checks timers, and
journals what became known.

The child's side (a child's terminal transaction sets its parent's ``next_wakeup_at`` and
notifies) is SQL: ``durable_after_terminal`` in sql/0005_wake_waiters_one.sql and
``durable_wake`` in sql/0004_concurrency.sql; the notification reaches
:meth:`durable.runtime.runs.RunTable.on_wake` through the listener.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..observe import hooks
from ..serde import dumps
from ..store import events as store_events
from ..store import waits as store_waits
from ..store.rows import Event, Key, split_key
from .journal import Journal


@dataclass(slots=True)
class Outcome:
    """A finished run as seen by a waiter."""

    run_id: uuid.UUID
    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    seq: int | None = None  # journal seq of the outcome event; None until it is written
    local: int = 0          # arrival order in this process (for outcomes not written yet)

    @property
    def order(self) -> tuple[bool, int, int]:
        """Journal order (as_completed): written outcomes by seq, then buffered ones in the
        order they will be written."""
        return (self.seq is None, self.seq or 0, self.local)

    def before(self, seq: int) -> bool:
        return self.seq is not None and self.seq < seq


@dataclass(eq=False)
class Waiter:
    kind: str  # 'children' | 'timer' | 'signal'
    future: asyncio.Future[Any]
    ids: tuple[uuid.UUID, ...] = ()
    mode: str = "all"  # children: 'all' | 'any'
    fire_at: float | None = None
    name: str | None = None
    key: Key | None = None
    # children: ids without a journaled outcome yet, and those of them that are not this
    # run's children (M:N waits); kept up to date per evaluation in O(new outcomes)
    remaining: set[uuid.UUID] | None = None
    others: set[uuid.UUID] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Found:
    chain: uuid.UUID      # the id waited on (a child's id, or another run's chain root)
    final: uuid.UUID      # the chain's final run
    status: str
    result: Any
    error: Any
    workflow: str
    latency_s: float | None
    oseq: int | None = None  # a child outcome's number among its parent's (the read cursor)


def _latency(db_now: float | None, finished_at: float | None) -> float | None:
    """Seconds from a run's terminal commit to ``db_now`` (never negative; None if unknown)."""
    if db_now is None or finished_at is None:
        return None
    return max(0.0, float(db_now) - float(finished_at))


def _outcome_written(outcome: Outcome, event: tuple[str, dict[str, Any]] | None,
                     read: Callable[[int], None] | None, oseq: int | None, seq: int) -> None:
    outcome.seq = seq
    if read is not None and oseq is not None:  # the parent's next look reads past it
        read(oseq)
    if event is not None:
        hooks.emit(event[0], **event[1])


class Waits:
    """The waiters of one execution and the outcomes it knows."""

    def __init__(self, journal: Journal, workflow: str) -> None:
        self.journal = journal
        self.run_id = journal.run_id
        self.workflow = workflow
        self.waiters: list[Waiter] = []
        self.outcomes: dict[uuid.UUID, Outcome] = {}      # journaled child/run outcomes by chain id
        self.cross_keys: dict[uuid.UUID, Key] = {}        # other runs waited on (chain id) -> key
        self.after = 0  # the last child outcome journaled (its seq among the parent's): reads go past it

    def learn(self, ev: Event) -> None:
        """An outcome read from history."""
        if ev.kind in ("child_completed", "child_failed", "child_cancelled", "run_outcome"):
            rid = uuid.UUID(ev.data["run_id"])
            self.outcomes[rid] = Outcome(rid, ev.data["status"], ev.data.get("result"), ev.data.get("error"), ev.seq)
            self.after = max(self.after, ev.data.get("oseq") or 0)

    def open(self) -> list[Waiter]:
        return [w for w in self.waiters if not w.future.done()]

    def fail_all(self, exc: BaseException) -> None:
        for w in list(self.waiters):
            if not w.future.done():
                w.future.set_exception(exc)

    def earliest_timer(self) -> float | None:
        timers = [w.fire_at for w in self.waiters if w.fire_at is not None and not w.future.done()]
        return min(timers) if timers else None

    async def evaluate(self, waiters: list[Waiter]) -> bool:
        """One pass over ``waiters``; returns True when any of them was resolved."""
        progressed = False
        # per wake, O(outcomes that are new) rather than O(ids waited on): a 10,000-child
        # fan-in is woken many times
        child_waits = [w for w in waiters if w.kind == "children"]
        for w in child_waits:
            if w.remaining is None:
                w.remaining = {i for i in w.ids if i not in self.outcomes}
                w.others = {i for i in w.remaining if i not in self.journal.child_keys}
        if any(w.remaining for w in child_waits):
            want_children = any(len(w.remaining or ()) > len(w.others) for w in child_waits)
            others: set[uuid.UUID] = set().union(*(w.others for w in child_waits))
            new = await self._collect(want_children, others)
            for w in child_waits:
                assert w.remaining is not None
                w.remaining.difference_update(new)
                w.others.difference_update(new)
        now: float | None = None
        for w in waiters:
            if w.future.done():
                continue
            if w.kind == "children":
                left = len(w.remaining or ())
                if left == 0 or (w.mode == "any" and left < len(w.ids)):
                    w.future.set_result(None)
                    progressed = True
            elif w.kind == "signal":
                if await self._consume_signal(w):
                    progressed = True
            if w.fire_at is not None and not w.future.done():
                if now is None:
                    now = await self.db_now()
                if now >= w.fire_at and not w.future.done():  # (cancelled while reading the clock)
                    w.future.set_result("timer")
                    progressed = True
        return progressed

    async def db_now(self) -> float:
        async with self.journal.conn() as conn:
            return await store_events.db_now(conn)

    async def _collect(self, children: bool, others: set[uuid.UUID]) -> list[uuid.UUID]:
        """Journal the outcomes of this run's children that finished since the last look
        (when ``children``) and of the finished runs among ``others`` (M:N), in one batch;
        returns the ids whose outcome is new.

        Each journaled child outcome emits ``child.completed|failed|cancelled`` with
        ``wake_latency_s`` = database now - the child's finished_at: one observation per
        outcome the parent receives (wakes coalesce; outcomes do not)."""
        found: list[_Found] = []
        child_keys = self.journal.child_keys
        async with self.journal.conn() as conn:
            if children:
                got = await store_waits.unread_children(conn, self.journal.tree_key, self.run_id, self.after)
                journaled = True  # so far every outcome read is in the journal: the cursor may pass it
                for c in got.children:
                    known = self.outcomes.get(c.chain_root_id)
                    if known is not None and known.seq is not None:  # journaled (now or in history)
                        if journaled:
                            self.after = max(self.after, c.seq)
                        continue
                    journaled = False
                    if c.chain_root_id in child_keys and known is None:
                        found.append(_Found(c.chain_root_id, c.id, c.status, c.result, c.error, c.workflow,
                                            _latency(got.db_now, c.finished_at), c.seq))
            if others:
                for o in await store_waits.run_outcomes(conn, list(others)):
                    if o.target in self.outcomes:
                        continue
                    if o.status == "missing":  # the run was deleted (retention) while we waited
                        found.append(_Found(o.target, o.target, "failed", None, {
                            "type": "RunNotFoundError",
                            "message": f"run {o.target} no longer exists (deleted by retention); it cannot finish"},
                            o.workflow, None))
                    else:
                        found.append(_Found(o.target, o.id, o.status, o.result, o.error, o.workflow,
                                            _latency(o.db_now, o.finished_at)))
        limit = self.journal.settings.payload_limit_bytes * 2 + 4096
        for f in found:
            is_child = f.chain in child_keys
            kind = "run_outcome" if not is_child else {
                "completed": "child_completed", "failed": "child_failed"}.get(f.status, "child_cancelled")
            data = {"run_id": str(f.chain), "final_run_id": str(f.final), "status": f.status,
                    "result": f.result, "error": f.error, **({"oseq": f.oseq} if f.oseq is not None else {})}
            outcome = Outcome(f.chain, f.status, f.result, f.error, None, len(self.outcomes))
            event = None
            if is_child:
                event = (kind.replace("_", ".", 1), {
                    "parent_run_id": self.run_id, "child_run_id": f.chain, "workflow": f.workflow,
                    "parent_workflow": self.workflow, "wake_latency_s": f.latency_s,
                    **({"error_type": (f.error or {}).get("type")} if f.status == "failed" else {})})
            mark_read = self._read_past if is_child else None
            key = child_keys.get(f.chain, self.cross_keys.get(f.chain))
            self.journal.buffer(key, kind, f.workflow, dumps(data, what=f"{kind} event", limit=limit),
                                functools.partial(_outcome_written, outcome, event, mark_read, f.oseq))
            self.outcomes[f.chain] = outcome
        return [f.chain for f in found]

    def _read_past(self, oseq: int) -> None:
        """A child outcome is journaled: later reads start after it (outcomes are journaled
        in the order they were read, so every one before it is journaled too)."""
        self.after = max(self.after, oseq)

    async def _consume_signal(self, w: Waiter) -> bool:
        """Take a signal the waiter waits for, journaled at its key (False: none there)."""
        assert w.name is not None
        journal = self.journal
        async with journal.conn() as conn:
            if not await store_events.has_signal(conn, journal.tree_key, self.run_id, w.name):
                return False
        pos, op = split_key(w.key)
        try:
            async with journal.write() as (conn, token, seq):
                got = await store_events.consume_signal(conn, journal.tree_key, self.run_id, token, seq=seq, pos=pos,
                                                        op=op, name=w.name)
                if got is None:
                    raise _NothingWritten()  # another waiter took it meanwhile
                if not got.leased:
                    raise journal.lost()
        except _NothingWritten:
            return False
        journal.record(Event(seq, pos, "signal_received", w.name, {"payload": got.payload}, op))
        if not w.future.done():  # its branch may have been cancelled while this was written
            w.future.set_result((got.payload,))
        return True


class _NothingWritten(Exception):
    """Inside a journal write: the statement wrote nothing (its seq is given back)."""
