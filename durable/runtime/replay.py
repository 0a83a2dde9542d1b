"""One run's history replayed offline against the code registered now: no database, no
lease, nothing written (what :class:`durable.testing.Replayer` runs).

The workflow runs with a :class:`Context` over a journal that holds the history and never
writes (:class:`ReplayJournal`): every operation the history answers replays as it does
in an execution (``Journal.expect`` compares code and history, so a changed workflow
raises :class:`~durable.NonDeterminismError` at the first divergence). An operation the
history does not answer (the run had not got there yet) would be live work: its branch
stops there and waits forever instead (a step past the history never runs). Waits resolve
from the history (children's outcomes journaled there; a journaled timer counts as fired:
the history's next operation of that branch tells whether it had). The replay ends when
the workflow returns or raises, or when every branch of it waits for something the history
does not hold; then the tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from ..config import EngineSettings
from ..errors import NonDeterminismError
from ..serde import validate
from ..store.connections import Conn, Pool
from ..store.rows import Claim, Event, Key, tree_key_of
from . import branches, keys
from .context import Context
from .history import RunHistory
from .host import Host, RunView
from .journal import Journal, replayable
from .registry import WorkflowDef
from .stops import ContinueAsNew, Stop
from .sync_steps import SyncSteps
from .waits import Waiter, Waits

_QUIET_TURNS = 3  # loop turns with no task of the workflow able to run: every branch waits


async def _never() -> NoReturn:
    """Wait forever (a branch reached the end of the history)."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


class ReplayJournal(Journal):
    """A journal over a history that writes nothing: a write (live work) waits forever."""

    offline = True
    reached_end = False  # some branch went past the history

    def _end(self) -> Coroutine[Any, Any, NoReturn]:
        self.reached_end = True
        return _never()

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Conn]:
        await self._end()
        yield cast(Conn, None)  # pragma: no cover

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        await self._end()
        yield  # pragma: no cover

    async def flush(self) -> None:
        await self._end()  # a step past the history: it never runs

    def buffer(self, key: Key | None, kind: str, name: str | None, text: str,
               on_written: Callable[[int], None] | None = None) -> None:
        self.reached_end = True  # a patch marker (live): nothing is written

    async def finish(self, status: str, result: str | None, error: str | None) -> str:
        return "stopped"


class _OfflineHost:
    """The host of an offline replay: nothing to park, claim or deliver."""

    owner = "replay"
    closing = False

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.sync_steps = SyncSteps()

    @property
    def pool(self) -> Pool:
        raise RuntimeError("an offline replay has no database")

    async def park(self, ex: RunView, fire_at: float | None, *, due_now: bool, db_now: float) -> Claim:
        return await _never()

    def execution_ended(self, ex: RunView, reason: str) -> None: ...

    def deliver(self, run_id: uuid.UUID, status: str, result: Any, error: Any) -> None: ...

    def outcome_changed(self, run_id: uuid.UUID) -> None: ...

    def replay(self, claim: Claim, source: str) -> None: ...

    def claim_soon(self, tree_key: int, run_id: uuid.UUID, queue: str, delay: float | None = None) -> None: ...

    def note_deadline(self, seconds: float) -> None: ...

    def work_added(self) -> None: ...

    def check_cancelled(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        coro.close()


@dataclass(frozen=True)
class ReplayEnd:
    """How an offline replay ended."""

    outcome: str                                # 'completed', 'failed', 'continued' or 'waiting'
    error: BaseException | None                 # what the workflow raised ('failed')
    nondeterminism: NonDeterminismError | None  # the first divergence, if any
    reached_end: bool                           # some branch went past the history


class OfflineRun:
    """A run replayed from its history (a :class:`RunView` for the workflow's Context)."""

    def __init__(self, history: RunHistory, wf: WorkflowDef[Any, Any], settings: EngineSettings) -> None:
        self.run_id = history.run_id
        self.tree_key = tree_key_of(history.root_id or history.run_id)
        self.grafted = history.grafted
        self.root_id = history.root_id or history.run_id
        self.parent_id = history.parent_id
        self.attempt = history.attempt
        self.queue = wf.queue
        self.wf = wf
        self.settings = settings
        self.host: Host = _OfflineHost(settings)
        self.raw_input = history.input
        self.started_mono = time.monotonic()
        self.cancel_requested = False
        self.cancel_observed = False
        self.interrupt_seq: int | None = None
        self.park_future: asyncio.Future[Claim] | None = None
        events: list[Event] = replayable(list(history.events))  # as Execution: a resume's superseded events
        self.journal: Journal = ReplayJournal(self.tree_key, self.run_id, wf.name, cast(Pool, None), settings,
                                              events, 1, on_halt=lambda stop: None, on_children_started=lambda: None)
        self.waits = Waits(self.journal, wf.name)
        for ev in events:  # as Execution does
            self.waits.learn(ev)
            if ev.kind == "cancel_observed":
                self.cancel_observed = True
                if ev.key is None:
                    self.interrupt_seq = ev.seq
        self.main_branch: branches.Branch | None = None
        self.ctx = Context(self)

    # --- RunView ----------------------------------------------------------------------------

    async def wait(self, waiter: Waiter) -> Any:
        if waiter.fire_at is not None:
            return "timer"  # a journaled timer: fired, or the branch's next operation ends the history
        if waiter.kind == "children":
            known = [i for i in waiter.ids if i in self.waits.outcomes]
            if len(known) == len(waiter.ids) or (waiter.mode == "any" and known):
                return None
        return await _never()  # a signal or outcome the history does not hold

    def begin_busy(self) -> None: ...

    def end_busy(self) -> None: ...

    def kick(self) -> None: ...

    def stop(self, reason: Stop) -> None: ...

    # --- the replay ---------------------------------------------------------------------------

    async def _invoke(self) -> Any:
        self.main_branch = branches.enter_main(self)
        wf = self.wf
        if wf.takes_input:
            value = validate(self.raw_input, wf.input_type, what=f"input of workflow {wf.name!r}")
            return await wf.fn(self.ctx, value)
        return await wf.fn(self.ctx)

    async def run(self, timeout: float) -> ReplayEnd:
        """Replay until the workflow ends or every branch waits for what the history lacks."""
        task = branches.create_outside(self._invoke(), name=f"durable-replay-{self.run_id}")
        deadline = time.monotonic() + timeout
        quiet = 0
        try:
            while not task.done():
                await asyncio.sleep(0)
                family = self.main_branch.family if self.main_branch is not None else {task}
                quiet = 0 if branches.runnable(family) or self.main_branch is None else quiet + 1
                if quiet >= _QUIET_TURNS:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replaying run {self.run_id} took longer than {timeout} s (does the "
                                       "workflow loop without durable operations?)")
        finally:
            if not task.done():
                await self._cancel(task)
        journal = self.journal
        reached_end = isinstance(journal, ReplayJournal) and journal.reached_end
        if not task.done() or task.cancelled():
            return ReplayEnd("waiting", None, journal.nondeterministic, reached_end)
        exc = task.exception()
        if isinstance(exc, NonDeterminismError):
            return ReplayEnd("failed", exc, journal.nondeterministic or exc, reached_end)
        if journal.nondeterministic is not None:
            return ReplayEnd("failed", exc, journal.nondeterministic, reached_end)
        outcome = "completed" if exc is None else "continued" if isinstance(exc, ContinueAsNew) else "failed"
        return ReplayEnd(outcome, exc, self._unreplayed(exc), reached_end)

    def _unreplayed(self, exc: BaseException | None) -> NonDeterminismError | None:
        """The workflow ended but its history goes on (as Execution._complete checks)."""
        branch = self.main_branch
        if branch is None:
            return None
        keys.skip_retired(self, branch)
        if self.journal.max_pos < branch.index:
            return None
        ev = (self.journal.by_key.get(branch.index) or self.journal.by_key[self.journal.max_pos])[0]
        ending = "the workflow returning" if exc is None else f"the workflow raising {type(exc).__name__}"
        return NonDeterminismError(self.run_id, branch.index, f"{ev.kind} {ev.name!r}", ending)

    async def _cancel(self, task: asyncio.Task[Any]) -> None:
        family = set(self.main_branch.family) if self.main_branch is not None else set()
        family.add(task)
        for t in family:
            t.cancel()
        await asyncio.wait(family, timeout=1.0)
