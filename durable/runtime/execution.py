"""One execution of one run in this process: drive the workflow coroutine to its end.

Durable operations (durable/runtime/context.py) read their outcome from the journal when
it is there (replay) and otherwise do the work and journal it under the lease. Operations
that wait register a waiter (durable/runtime/waits.py); this execution's *driver*
evaluates every waiter against the database in one pass whenever it is kicked, and when
nothing can progress it *suspends* the run (lease released) and parks the coroutine in
memory with its host. A wake (notification, timer, poll) re-claims the run and the parked
coroutine resumes where it was without replay; if another process advanced the run
meanwhile, or the coroutine was evicted, a cold replay from the journal takes over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ..errors import CancellationRequested, NonDeterminismError, PayloadError
from ..observe import hooks
from ..serde import error_doc, roundtrip, validate
from ..store import runs as store_runs
from ..store.rows import Claim, Event
from . import branches, renew
from .context import Context
from .host import Host
from .journal import Journal, replayable
from .parked import RUN_BYTES
from .registry import WorkflowDef
from .stops import ContinueAsNew, Stale, Stop
from .waits import Waiter, Waits

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")
# loop turns the driver lets the workflow's tasks run before judging that none can
# progress (bounds a task that never awaits anything unresolved)
_SETTLE_TURNS = 1000
_CANCELLED = {"type": "Cancelled", "reason": "cancelled", "message": "the run was cancelled"}


class Execution:
    def __init__(self, host: Host, claim: Claim, wf: WorkflowDef[Any, Any], history: list[Event]) -> None:
        self.host = host
        self.settings = host.settings
        self.run_id = claim.id
        self.tree_key = claim.tree_key
        self.grafted = claim.grafted
        self.root_id = claim.root_id
        self.parent_id = claim.parent_id
        self.attempt = claim.attempt
        # the run's first execution (nothing journaled, never suspended): where metrics count a start
        self.first = claim.last_seq == 0 and claim.prev_status == "pending"
        self.depth = claim.depth
        self.queue = claim.queue or wf.queue  # the run's queue (labels)
        self.raw_input = claim.input
        self.wf = wf
        self.cancel_requested = claim.cancel_requested
        self.cancel_observed = False
        self.interrupt_seq: int | None = None  # replay: a wait interrupted by a cancel request
        history = replayable(history)  # a resumed run skips the history its resume superseded
        self.journal = Journal(claim.tree_key, self.run_id, wf.name, host.pool, host.settings, history,
                               claim.lease_epoch,
                               on_halt=self._abort_waits, on_children_started=host.work_added)
        self.waits = Waits(self.journal, wf.name)
        for ev in history:
            self.waits.learn(ev)
            if ev.kind == "cancel_observed":
                self.cancel_observed = True
                if ev.key is None:
                    self.interrupt_seq = ev.seq
        self.main_branch: branches.Branch | None = None
        self.busy = 0  # steps (and lifecycle calls) in flight
        self.kicked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.driver: asyncio.Task[None] | None = None
        self.wf_task: asyncio.Task[Any] | None = None
        self.park_future: asyncio.Future[Claim] | None = None
        self.started_mono = time.monotonic()
        self.ctx = Context(self)

    @property
    def stopping(self) -> Stop | None:
        return self.journal.stopping

    @property
    def memory_bytes(self) -> int:
        """The memory this execution holds while parked, estimated (see parked.py)."""
        return RUN_BYTES + self.journal.bytes

    @property
    def token(self) -> int | None:
        return self.journal.token

    # --- waiting ------------------------------------------------------------------------

    async def wait(self, waiter: Waiter) -> Any:
        self.journal.check_live()
        if self.driver is None:  # started on the first wait: most short runs never need it
            self.driver = branches.create_outside(self._drive())
        self.waits.waiters.append(waiter)
        self.kicked.set()
        try:
            return await waiter.future
        finally:
            if waiter in self.waits.waiters:
                self.waits.waiters.remove(waiter)

    def begin_busy(self) -> None:
        self.busy += 1

    def end_busy(self) -> None:
        self.busy -= 1
        if self.waits.waiters:  # only a pending wait needs re-evaluating (and maybe suspending)
            self.kicked.set()  # (saves a driver wake-up per step; small, within noise)

    def kick(self) -> None:
        self.kicked.set()

    async def _drive(self) -> None:
        """Evaluate waiters whenever kicked; suspend and park when nothing can progress."""
        while True:
            await self.kicked.wait()
            self.kicked.clear()
            await self._settle()
            if not self.waits.waiters or self.stopping is not None:
                continue
            try:
                progressed = await self._evaluate()
                if progressed:
                    # the tasks it resumed may end without waiting again (a branch that
                    # returns while others wait): look again once they have run
                    self.kicked.set()
                    continue
                if self.busy or self.journal.io or self.kicked.is_set():
                    continue
                await self._suspend_and_park()
                self.kicked.set()
            except Stop as stop:
                self._abort(stop)
                return
            except Exception as exc:  # a bug or bad data while waiting: surface it to the workflow
                log.warning("run %s: evaluating waits failed: %s", self.run_id, exc,
                            extra={"run_id": str(self.run_id), "workflow": self.wf.name})
                self.waits.fail_all(exc)

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

    def _abort_waits(self, stop: Stop) -> None:
        self.waits.fail_all(stop)

    def _abort(self, stop: Stop) -> None:
        self.journal.halt(stop)
        self.waits.fail_all(stop)
        if self.wf_task is not None and not self.wf_task.done() and self.busy:
            self.wf_task.cancel()

    async def _evaluate(self) -> bool:
        """One pass over all waiters; returns True when any of them was resolved."""
        waiters = self.waits.open()
        if self.cancel_requested and not self.cancel_observed and waiters:
            # a graceful cancel interrupts the first blocked wait, journaled so a replay
            # interrupts the same wait
            w = waiters[0]
            await self.journal.append(w.key, "cancel_observed", None, {})
            self.cancel_observed = True
            w.future.set_exception(CancellationRequested(f"run {self.run_id} was asked to cancel"))
            return True
        return await self.waits.evaluate(waiters)

    async def _suspend_and_park(self) -> None:
        fire_at = self.waits.earliest_timer()
        # a wake that reaches this process from now until the run is parked must not be
        # lost: the notification kicks this execution, and a kick counts as due
        self.kicked.clear()
        async with self.journal.write(0) as (conn, token, _):  # buffered outcomes first, same lock
            suspended = await store_runs.suspend(conn, self.tree_key, self.run_id, token, fire_at)
            if suspended is None:
                raise self.journal.lost()
        self.journal.token = None
        hooks.emit("run.suspended", run_id=self.run_id, workflow=self.wf.name)
        due_now = suspended.due_now or self.kicked.is_set()
        claim = await self.host.park(self, fire_at, due_now=due_now, db_now=suspended.db_now)
        if claim.last_seq != self.journal.next_seq - 1:
            raise Stale(claim)
        self.journal.token = claim.lease_epoch
        self.cancel_requested = self.cancel_requested or claim.cancel_requested

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self.task = branches.create_outside(self._main(), name=f"durable-run-{self.run_id}")
        return self.task

    def stop(self, reason: Stop) -> None:
        """Stop executing (lease lost, cancelled, shutdown): unwinds at the next durable point."""
        self.journal.halt(reason)
        if self.park_future is not None and not self.park_future.done():
            self.park_future.set_exception(reason)
        self._abort(reason)
        if self.wf_task is not None and not self.wf_task.done():
            self.wf_task.cancel()

    async def _invoke(self) -> Any:
        self.main_branch = branches.enter_main(self)
        wf = self.wf
        if wf.takes_input:
            value = validate(self.raw_input, wf.input_type, what=f"input of workflow {wf.name!r}")
            return await wf.fn(self.ctx, value)
        return await wf.fn(self.ctx)

    async def _main(self) -> None:
        hooks.emit("execution.started", run_id=self.run_id, workflow=self.wf.name, queue=self.queue,
                   attempt=self.attempt, parent_run_id=self.parent_id, first=self.first)
        reason = "terminal"
        try:
            reason = await self._run_to_end()
        except Stale as stale:
            reason = "stale"
            self.host.replay(stale.claim, source="local")
        except Stop as stop:  # lease lost, evicted, shutdown, database gone: not a failure
            reason = stop.reason
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        except Exception:  # a bug or a broken schema while writing the outcome: the run is not
            # failed; its lease expires and another attempt resumes it from the journal
            reason = "error"
            log.exception("run %s: could not record its outcome; it resumes after lease expiry", self.run_id,
                          extra={"run_id": str(self.run_id), "workflow": self.wf.name})
        finally:
            if self.driver is not None:
                self.driver.cancel()
            self.host.execution_ended(self, reason)
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
                if self.stopping is not None and not isinstance(exc, Stop):
                    # stopped (evicted, lease lost, shutdown): what the code raised on the way
                    # out (a TaskGroup's group around the stop, say) is not the run's outcome
                    raise self.stopping from exc
                nondeterministic = self.journal.nondeterministic
                if nondeterministic is not None and not isinstance(exc, (Stop, NonDeterminismError)):
                    raise nondeterministic from exc  # the code caught the mismatch and went on
                raise
            if self.journal.nondeterministic is not None:
                raise self.journal.nondeterministic
        except (Stop, asyncio.CancelledError):
            raise
        except ContinueAsNew as can:
            await renew.continue_as_new(self, can)
            return "continued"
        except NonDeterminismError as exc:
            log.error("%s", exc, extra={"run_id": str(self.run_id), "workflow": self.wf.name})
            await self._fail(exc)
            return "nondeterminism"
        except CancellationRequested:
            if self.cancel_observed:
                await self._finish("cancelled", None, json.dumps(_CANCELLED))
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
        return self.journal.max_pos if self.journal.max_pos >= used else None

    async def _complete(self, result: Any) -> None:
        extra = self._unreplayed_history()
        if extra is not None:
            ev = self.journal.by_key[extra][0]
            exc = NonDeterminismError(self.run_id, extra, f"{ev.kind} {ev.name!r}", "the workflow returning")
            log.error("%s", exc, extra={"run_id": str(self.run_id), "workflow": self.wf.name})
            await self._fail(exc)
            return
        try:
            # validated against the declared result type now, so a result that readers
            # could not load is refused here and never stored
            text, _ = roundtrip(result, self.wf.result_type, what=f"result of workflow {self.wf.name!r}",
                                limit=self.settings.payload_limit_bytes)
        except PayloadError as exc:
            await self._fail(exc)
            return
        if self.cancel_observed:  # finished its compensation after a graceful cancel
            await self._finish("cancelled", text, json.dumps(_CANCELLED))
            return
        await self._finish("completed", text, None)

    async def _fail(self, exc: BaseException) -> None:
        doc = error_doc(exc)
        if isinstance(exc, NonDeterminismError):
            doc["type"] = "NonDeterminismError"
        await self._finish("failed", None, json.dumps(doc))

    async def _finish(self, status: str, result: str | None, error: str | None) -> None:
        outcome = await self.journal.finish(status, result, error)
        if outcome in ("lost", "stopped"):
            return
        if outcome == "retried":  # a child's retry policy re-runs it as a new attempt
            renew.attempt_retried(self, error)
            return
        duration = time.monotonic() - self.started_mono
        fields: dict[str, Any] = {"run_id": self.run_id, "workflow": self.wf.name,
                                  "queue": self.queue, "duration_s": duration}
        if status == "failed":
            fields["error_type"] = json.loads(error or "{}").get("type")
        elif status == "cancelled":
            fields["reason"] = json.loads(error or "{}").get("reason") or "cancelled"
        hooks.emit(f"run.{status}", **fields)
        self.host.deliver(self.run_id, status, json.loads(result) if result else None,
                          json.loads(error) if error else None)

