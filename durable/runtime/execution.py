"""One execution of one run in this process: replay, fenced journal writes, waits.

An :class:`Execution` drives the workflow coroutine. Durable operations (in
``context.py``) read their outcome from the journal when it is there (replay) and
otherwise do the work and append it under the lease token. Operations that wait
(children, timers, signals, other runs) register a :class:`Waiter`; the execution's
driver evaluates all waiters against the database in one pass, journals what became
known, and when nothing can progress it *suspends* the run (lease released) and parks
the coroutine in memory. A wake (notification, timer, poll) re-claims the run and the
parked coroutine resumes where it was without replay; if another process advanced the
run meanwhile, or the coroutine was evicted, a cold replay from the journal takes over.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import branches
from ..observe import hooks
from ..store import queries
from .. import serde
from ..errors import CancellationRequested, LeaseLostError, NonDeterminismError, PayloadError
from .journal import ContinueAsNew, DatabaseLost, Event, Evicted, Journal, Key, LeaseLost, Pending, Shutdown, Stale, _Stop, split_key
from .registry import WorkflowDef

if TYPE_CHECKING:
    from .context import Context
    from ..engine import Engine

log = logging.getLogger("durable.executor")

TERMINAL = ("completed", "failed", "cancelled")
# loop turns the driver lets the workflow's tasks run before judging that none can
# progress (bounds a task that never awaits anything unresolved)
_SETTLE_TURNS = 1000


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
    future: asyncio.Future
    ids: tuple[uuid.UUID, ...] = ()
    mode: str = "all"  # children: 'all' | 'any'
    fire_at: float | None = None
    name: str | None = None
    pos: Key | None = None
    # children: ids without a journaled outcome yet, and those of them that are not this
    # run's children (M:N waits); kept up to date per evaluation in O(new outcomes)
    remaining: set[uuid.UUID] | None = None
    others: set[uuid.UUID] = field(default_factory=set)


def _outcome_written(outcome: Outcome, event: tuple[str, dict[str, Any]] | None,
                     read: Callable[[uuid.UUID], None] | None, run_id: uuid.UUID, seq: int) -> None:
    outcome.seq = seq
    if read is not None:  # the parent's next look clears the child's unread flag
        read(run_id)
    if event is not None:
        hooks.emit(event[0], **event[1])


def _latency(db_now: float | None, finished_at: float | None) -> float | None:
    """Seconds from a run's terminal commit to ``db_now`` (never negative; None if unknown)."""
    if db_now is None or finished_at is None:
        return None
    return max(0.0, float(db_now) - float(finished_at))


class Execution(Journal):
    def __init__(self, engine: "Engine", claim: dict[str, Any], wf: WorkflowDef,
                 history: list[Event]) -> None:
        from .context import Context as _Context

        self._wlock = asyncio.Lock()
        self._wlock_owner = None
        self.engine = engine
        self.settings = engine.settings
        self.run_id: uuid.UUID = claim["id"]
        self.root_id: uuid.UUID = claim["root_id"]
        self.parent_id: uuid.UUID | None = claim.get("parent_id")
        self.token: int | None = claim["lease_token"]
        self.attempt: int = claim.get("attempt") or 1
        self.depth: int = claim.get("depth") or 0
        self.cancel_requested = bool(claim.get("cancel_requested"))
        self.cancel_observed = False
        self.nondeterministic: NonDeterminismError | None = None
        self.interrupt_seq: int | None = None  # replay: a wait interrupted by a cancel request
        self.wf = wf
        self.queue: str = claim.get("queue") or wf.queue  # the run's queue (labels)
        self.raw_input = claim["input"]
        self.by_pos: dict[Key, list[Event]] = {}
        self.max_pos = -1
        self.next_seq = 1
        for ev in history:
            self._index(ev)
        self.outcomes: dict[uuid.UUID, Outcome] = {}   # journaled child/run outcomes by chain id
        self.child_pos: dict[uuid.UUID, Key] = {}      # children this run started: id -> op key
        self.main_branch: branches.Branch | None = None
        for ev in history:
            self._learn(ev)
        self._read_children: list[uuid.UUID] = []  # child rows whose outcome is journaled: flags to clear
        self.waiters: list[Waiter] = []
        self.busy = 0  # steps (and lifecycle calls) in flight
        self.io = 0    # journal statements of the workflow's tasks in flight
        self.stopping: _Stop | None = None
        self.kicked = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.driver: asyncio.Task | None = None
        # events journaled at the next durable point (step and child outcomes)
        self._pending: list[Pending] = []
        self.wf_task: asyncio.Task | None = None
        self.park_future: asyncio.Future | None = None
        self.started_mono = time.monotonic()
        self.ctx: Context = _Context(self)

    # --- history ------------------------------------------------------------------------
    def _learn(self, ev: Event) -> None:
        if ev.kind == "child_started":
            self.child_pos[uuid.UUID(ev.data["child_id"])] = ev.key  # type: ignore[assignment]
        elif ev.kind in ("child_completed", "child_failed", "child_cancelled", "run_outcome"):
            rid = uuid.UUID(ev.data["run_id"])
            self.outcomes[rid] = Outcome(rid, ev.data["status"], ev.data.get("result"),
                                         ev.data.get("error"), ev.seq)
        elif ev.kind == "cancel_observed":
            self.cancel_observed = True
            if ev.key is None:
                self.interrupt_seq = ev.seq

    # --- waiting ------------------------------------------------------------------------

    async def wait(self, waiter: Waiter) -> Any:
        self._check_live()
        if self.driver is None:  # started on the first wait: most short runs never need it
            self.driver = branches.create_outside(self._drive())
        self.waiters.append(waiter)
        self.kicked.set()
        try:
            return await waiter.future
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def begin_busy(self) -> None:
        self.busy += 1

    def end_busy(self) -> None:
        self.busy -= 1
        if self.waiters:  # only a pending wait needs re-evaluating (and maybe suspending)
            self.kicked.set()  # (saves a driver wake-up per step; small, within noise)

    def kick(self) -> None:
        self.kicked.set()

    async def _drive(self) -> None:
        """Evaluate waiters whenever kicked; suspend and park when nothing can progress."""
        while True:
            await self.kicked.wait()
            self.kicked.clear()
            await self._settle()
            if not self.waiters or self.stopping is not None:
                continue
            try:
                progressed = await self._evaluate()
                if progressed:
                    # the tasks it resumed may end without waiting again (a branch that
                    # returns while others wait): look again once they have run
                    self.kicked.set()
                    continue
                if self.busy or self.io or self.kicked.is_set():
                    continue
                await self._suspend_and_park()
                self.kicked.set()
            except _Stop as stop:
                self._abort(stop)
                return
            except Exception as exc:  # a bug or bad data while waiting: surface it to the workflow
                log.warning("run %s: evaluating waits failed: %s", self.run_id, exc)
                for w in list(self.waiters):
                    if not w.future.done():
                        w.future.set_exception(exc)

    async def _settle(self) -> None:
        """Let the workflow's tasks run until none of them can (each awaits a durable wait,
        another of its tasks or I/O), for three loop turns in a row: a task resumed by a
        finished branch needs a turn or two of callbacks (gather, TaskGroup) to be seen."""
        family = self.main_branch.family if self.main_branch is not None else set()
        quiet = 0
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)
            quiet = 0 if branches.runnable(family) else quiet + 1
            if quiet >= 3:
                return

    def _abort_waits(self, stop: _Stop) -> None:
        for w in list(self.waiters):
            if not w.future.done():
                w.future.set_exception(stop)

    def _abort(self, stop: _Stop) -> None:
        if self.stopping is None:
            self.stopping = stop
        for w in list(self.waiters):
            if not w.future.done():
                w.future.set_exception(stop)
        if self.wf_task is not None and not self.wf_task.done() and self.busy:
            self.wf_task.cancel()

    async def _evaluate(self) -> bool:
        """One pass over all waiters; returns True when any of them was resolved."""
        waiters = [w for w in self.waiters if not w.future.done()]
        if self.cancel_requested and not self.cancel_observed and waiters:
            # a graceful cancel interrupts the first blocked wait, journaled so a replay
            # interrupts the same wait
            w = waiters[0]
            await self.append(w.pos, "cancel_observed", None, {})
            self.cancel_observed = True
            w.future.set_exception(CancellationRequested(f"run {self.run_id} was asked to cancel"))
            return True
        progressed = False
        # per wake, O(outcomes that are new) rather than O(ids waited on): a 10,000-child
        # fan-in is woken many times
        child_waits = [w for w in waiters if w.kind == "children"]
        for w in child_waits:
            if w.remaining is None:
                w.remaining = {i for i in w.ids if i not in self.outcomes}
                w.others = {i for i in w.remaining if i not in self.child_pos}
        if any(w.remaining for w in child_waits):
            want_children = any(len(w.remaining) > len(w.others) for w in child_waits)  # type: ignore[arg-type]
            others = set().union(*(w.others for w in child_waits))
            new = await self._collect_outcomes(want_children, others)
            for w in child_waits:
                w.remaining.difference_update(new)  # type: ignore[union-attr]
                w.others.difference_update(new)
        now: float | None = None
        for w in waiters:
            if w.future.done():
                continue
            if w.kind == "children":
                left = len(w.remaining)  # type: ignore[arg-type]
                if left == 0 or (w.mode == "any" and left < len(w.ids)):
                    w.future.set_result(None)
                    progressed = True
            elif w.kind == "signal":
                got = await self.ctx._try_consume_signal(w)
                if got:
                    progressed = True
            if w.fire_at is not None and not w.future.done():
                if now is None:
                    now = await self.db_now()
                if now >= w.fire_at and not w.future.done():  # (cancelled while reading the clock)
                    w.future.set_result("timer")
                    progressed = True
        return progressed

    async def db_now(self) -> float:
        async with self.conn() as conn:
            row = await (await conn.execute(queries.DB_NOW)).fetchone()
        return float(row[0])  # type: ignore[index]

    async def _collect_outcomes(self, children: bool, others: set[uuid.UUID]) -> list[uuid.UUID]:
        """Journal the outcomes of this run's children that finished since the last look
        (when ``children``) and of the finished runs among ``others`` (M:N), in one batch;
        returns the ids whose outcome is new.

        Each journaled child outcome emits ``child.completed|failed|cancelled`` with
        ``wake_latency_s`` = database now - the child's finished_at: one observation per
        outcome the parent receives (wakes coalesce; outcomes do not)."""
        # (chain id, final run id, status, result, error, workflow, wake latency s or None)
        found: list[tuple[uuid.UUID, uuid.UUID, str, Any, Any, str, float | None]] = []
        async with self.conn() as conn:
            if children:
                read = list(self._read_children)
                self._read_children.clear()
                try:
                    cur = await conn.execute(queries.FINISHED_CHILDREN, {"parent": self.run_id, "read": read})
                    row = await cur.fetchone()
                except BaseException:
                    self._read_children[:0] = read
                    raise
                db_now = row[2]  # type: ignore[index]
                for r in row[1] or ():  # type: ignore[index]
                    cid = uuid.UUID(r["chain_root_id"])
                    known = self.outcomes.get(cid)
                    if known is not None and known.seq is not None:  # journaled (now or in history)
                        self._read_children.append(uuid.UUID(r["id"]))
                    elif cid in self.child_pos and known is None:
                        found.append((cid, uuid.UUID(r["id"]), r["status"], r["result"], r["error"],
                                      r["workflow"], _latency(db_now, r.get("finished_at"))))
            if others:
                cur = await conn.execute(queries.RUN_OUTCOMES, (list(others),))
                for cid, rid, status, result, error, workflow, finished_at, now in await cur.fetchall():
                    if cid in self.outcomes:
                        continue
                    if status == "missing":  # the run was deleted (retention) while we waited
                        status, rid, error = "failed", cid, {
                            "type": "RunNotFoundError",
                            "message": f"run {cid} no longer exists (deleted by retention); it cannot finish"}
                    found.append((cid, rid, status, result, error, workflow or "", _latency(now, finished_at)))
        if not found:
            return []
        items: list[tuple[int | None, str, str | None, dict[str, Any]]] = []
        for cid, rid, status, result, error, workflow, _ in found:
            kind = "run_outcome" if cid not in self.child_pos else {
                "completed": "child_completed", "failed": "child_failed"}.get(status, "child_cancelled")
            items.append((self.child_pos.get(cid, self._cross_pos.get(cid)), kind, workflow,
                          {"run_id": str(cid), "final_run_id": str(rid), "status": status,
                           "result": result, "error": error}))
        limit = self.settings.payload_limit_bytes * 2 + 4096
        for (pos, kind, workflow, data), (cid, rid, status, result, error, _, latency) in zip(items, found):
            outcome = Outcome(cid, status, result, error, None, len(self.outcomes))
            event = None
            if kind.startswith("child_"):
                event = (kind.replace("_", ".", 1), {
                    "parent_run_id": self.run_id, "child_run_id": cid, "workflow": workflow,
                    "parent_workflow": self.wf.name, "wake_latency_s": latency,
                    **({"error_type": (error or {}).get("type")} if status == "failed" else {})})
            read = self._read_children.append if kind.startswith("child_") else None
            self.append_raw(pos, kind, workflow, serde.dumps(data, what=f"{kind} event", limit=limit),
                            functools.partial(_outcome_written, outcome, event, read, rid))
            self.outcomes[cid] = outcome
        return [f[0] for f in found]

    @property
    def _cross_pos(self) -> dict[uuid.UUID, Key]:
        return self.ctx._cross_pos

    async def _suspend_and_park(self) -> None:
        timers = [w.fire_at for w in self.waiters if w.fire_at is not None and not w.future.done()]
        fire_at = min(timers) if timers else None
        # a wake that reaches this process from now until the run is parked must not be
        # lost: the notification kicks this execution, and a kick counts as due
        self.kicked.clear()
        async with self.write(0) as (conn, token, _):  # buffered outcomes first, same lock
            cur = await conn.execute(queries.SUSPEND, (fire_at, self.run_id, token))
            row = await cur.fetchone()
            if row is None:
                self._lost()
        self.token = None
        hooks.emit("run.suspended", run_id=self.run_id, workflow=self.wf.name)
        due_now = bool(row[0]) or self.kicked.is_set()  # type: ignore[index]
        claim = await self.engine.park(self, fire_at, due_now=due_now, db_now=float(row[1]))  # type: ignore[index]
        if claim["last_seq"] != self.next_seq - 1:
            raise Stale(claim)
        self.token = claim["lease_token"]
        self.cancel_requested = self.cancel_requested or bool(claim.get("cancel_requested"))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        self.task = branches.create_outside(self._main(), name=f"durable-run-{self.run_id}")
        return self.task

    def stop(self, reason: _Stop) -> None:
        """Stop executing (lease lost, cancelled, shutdown): unwinds at the next durable point."""
        if self.stopping is None:
            self.stopping = reason
        if self.park_future is not None and not self.park_future.done():
            self.park_future.set_exception(reason)
        self._abort(reason)
        if self.wf_task is not None and not self.wf_task.done():
            self.wf_task.cancel()

    async def _invoke(self) -> Any:
        self.main_branch = branches.enter_main(self)
        wf = self.wf
        if wf.takes_input:
            value = serde.validate(self.raw_input, wf.input_type, what=f"input of workflow {wf.name!r}")
            return await wf.fn(self.ctx, value)
        return await wf.fn(self.ctx)

    async def _main(self) -> None:
        hooks.emit("execution.started", run_id=self.run_id, workflow=self.wf.name)
        reason = "terminal"
        try:
            reason = await self._run_to_end()
        except Stale as stale:
            reason = "stale"
            self.engine.replay_claimed(stale.claim, source="local")
        except _Stop as stop:  # lease lost, evicted, shutdown, database gone: not a failure
            reason = stop.reason
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        except Exception:  # a bug or a broken schema while writing the outcome: the run is not
            # failed; its lease expires and another attempt resumes it from the journal
            reason = "error"
            log.exception("run %s: could not record its outcome; it resumes after lease expiry", self.run_id)
        finally:
            if self.driver is not None:
                self.driver.cancel()
            self.engine.execution_ended(self, reason)
            hooks.emit("execution.ended", run_id=self.run_id, workflow=self.wf.name, reason=reason)

    async def _run_to_end(self) -> str:
        """Run the workflow and write its terminal state; returns the end reason."""
        self.wf_task = asyncio.create_task(self._invoke())
        try:
            try:
                result = await self.wf_task
            except asyncio.CancelledError:
                if self.stopping is None:
                    raise
                raise self.stopping from None
            except BaseException as exc:
                if self.stopping is not None and not isinstance(exc, _Stop):
                    # stopped (evicted, lease lost, shutdown): what the code raised on the way
                    # out (a TaskGroup's group around the stop, say) is not the run's outcome
                    raise self.stopping from exc
                if self.nondeterministic is not None and not isinstance(exc, (_Stop, NonDeterminismError)):
                    raise self.nondeterministic from exc  # the code caught the mismatch and went on
                raise
            if self.nondeterministic is not None:
                raise self.nondeterministic
        except (_Stop, asyncio.CancelledError):
            raise
        except ContinueAsNew as can:
            await self.engine.lifecycle.continue_as_new(self, can)
            return "continued"
        except NonDeterminismError as exc:
            log.error("%s", exc)
            await self._fail(exc)
            return "nondeterminism"
        except CancellationRequested:
            if self.cancel_observed:
                await self._finish("cancelled", None, json.dumps({"type": "Cancelled", "reason": "cancelled",
                                                                  "message": "the run was cancelled"}))
            else:  # raised by user code on its own: an ordinary failure
                await self._fail(CancellationRequested("CancellationRequested raised by the workflow"))
            return "terminal"
        except BaseException as exc:  # the workflow failed
            await self._fail(exc)
            return "terminal"
        await self._complete(result)
        return "terminal"

    def _unreplayed_history(self) -> int | None:
        used = self.main_branch.index if self.main_branch is not None else 0
        return self.max_pos if self.max_pos >= used else None

    async def _complete(self, result: Any) -> None:
        extra = self._unreplayed_history()
        if extra is not None:
            ev = self.by_pos[extra][0]
            exc = NonDeterminismError(self.run_id, extra, f"{ev.kind} {ev.name!r}", "the workflow returning")
            log.error("%s", exc)
            await self._fail(exc)
            return
        try:
            # validated against the declared result type now, so a result that readers
            # could not load is refused here and never stored
            text, _ = serde.roundtrip(result, self.wf.result_type, what=f"result of workflow {self.wf.name!r}",
                                      limit=self.settings.payload_limit_bytes)
        except PayloadError as exc:
            await self._fail(exc)
            return
        if self.cancel_observed:  # finished its compensation after a graceful cancel
            await self._finish("cancelled", text, json.dumps({"type": "Cancelled", "reason": "cancelled",
                                                              "message": "the run was cancelled"}))
            return
        await self._finish("completed", text, None)

    async def _fail(self, exc: BaseException) -> None:
        doc = serde.error_doc(exc)
        if isinstance(exc, NonDeterminismError):
            doc["type"] = "NonDeterminismError"
        await self._finish("failed", None, json.dumps(doc))

    async def _finish(self, status: str, result: str | None, error: str | None) -> None:
        token = self.token
        if token is None or self.stopping is not None:
            return
        async with self._locked():
            # the last buffered outcome's event goes with the terminal state (one commit);
            # any others are written first, on the same connection
            last = self._pending.pop() if self._pending else None
            first = self.next_seq
            try:
                async with self.conn() as conn:
                    if last is None:
                        cur = await conn.execute(queries.FINISH_RUN_OUTCOME, (
                            self.run_id, token, status, result, error, self.settings.max_child_depth))
                    else:
                        seq = self._take_seq()
                        pos, op = split_key(last.key)
                        cur = await conn.execute(queries.FINISH_WITH_EVENT, {
                            "seq": seq, "pos": pos, "op": op, "kind": last.kind, "name": last.name,
                            "data": last.text, "id": self.run_id, "token": token, "status": status,
                            "result": result, "error": error, "depth": self.settings.max_child_depth})
                    row = await cur.fetchone()
            except BaseException:
                if last is not None:  # not journaled: its seq is given back with it
                    self._pending.append(last)
                    self.next_seq = first
                raise
        outcome = row[0] if row else "lost"
        if last is not None and last.on_written is not None and outcome != "lost":
            last.on_written(seq)  # the buffered outcome is journaled now
        if outcome == "lost":
            self.token = None
            hooks.emit("lease.lost", run_id=self.run_id, workflow=self.wf.name)
            return
        self.token = None
        if outcome == "retried":  # a child's retry policy re-runs it as a new attempt
            self.engine.lifecycle.attempt_retried(self, error)
            return
        duration = time.monotonic() - self.started_mono
        fields: dict[str, Any] = {"run_id": self.run_id, "workflow": self.wf.name,
                                  "queue": self.queue, "duration_s": duration}
        if status == "failed":
            fields["error_type"] = json.loads(error or "{}").get("type")
        elif status == "cancelled":
            fields["reason"] = json.loads(error or "{}").get("reason") or "cancelled"
        hooks.emit(f"run.{status}", **fields)
        self.engine.deliver_result(self.run_id, status, json.loads(result) if result else None,
                                   json.loads(error) if error else None)


__all__ = ["Execution", "Event", "Outcome", "Waiter", "LeaseLost", "Evicted", "Shutdown", "Stale",
           "DatabaseLost", "ContinueAsNew", "LeaseLostError", "TERMINAL"]
