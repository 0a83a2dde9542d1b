"""What an execution needs from the process that runs it (the run table implements it).

An :class:`~durable.runtime.execution.Execution` never reaches up into the engine: it
talks to its :class:`Host` through this small protocol, so the runtime's layers import
downwards only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

from ..config import EngineSettings
from ..store.connections import Pool
from ..store.rows import Claim
from .journal import Journal
from .registry import WorkflowDef
from .stops import Stop
from .sync_steps import SyncSteps
from .waits import Waiter, Waits


class RunView(Protocol):
    """One execution as its durable operations and its host see it
    (:class:`~durable.runtime.execution.Execution` is the implementation)."""

    run_id: uuid.UUID
    tree_key: int
    grafted: bool
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    attempt: int
    queue: str
    wf: WorkflowDef[Any, Any]
    settings: EngineSettings
    host: "Host"
    journal: Journal
    waits: Waits
    started_mono: float
    cancel_requested: bool
    cancel_observed: bool
    interrupt_seq: int | None
    park_future: asyncio.Future[Claim] | None

    async def wait(self, waiter: Waiter) -> Any:
        """Suspend the calling branch until ``waiter`` is resolved."""

    def begin_busy(self) -> None:
        """Work is in flight (a step, a send): the run must not be suspended meanwhile."""

    def end_busy(self) -> None: ...

    def kick(self) -> None:
        """Look at the waiters again (something they wait for may have happened)."""

    def stop(self, reason: Stop) -> None:
        """Stop executing here (unwinds at the next durable point)."""


class Host(Protocol):
    settings: EngineSettings
    owner: str
    sync_steps: SyncSteps

    @property
    def pool(self) -> Pool: ...

    @property
    def closing(self) -> bool:
        """The process is shutting down: executions stop at their next durable point."""

    async def park(self, ex: RunView, fire_at: float | None, *, due_now: bool, db_now: float) -> Claim:
        """Keep a suspended execution in memory until this process claims its run again;
        returns that claim (raises a Stop when the execution is dropped instead)."""

    def execution_ended(self, ex: RunView, reason: str) -> None:
        """An execution ended (``reason``: terminal, continued, stale, lease_lost, ...)."""

    def deliver(self, run_id: uuid.UUID, status: str, result: Any, error: Any) -> None:
        """A run finished here: hand its outcome to whoever waits for it in this process."""

    def outcome_changed(self, run_id: uuid.UUID) -> None:
        """A run ended or continued in a way its waiters here must re-read from the database."""

    def replay(self, claim: Claim, source: str) -> None:
        """Execute a claimed run from its journal (cold)."""

    def claim_soon(self, tree_key: int, run_id: uuid.UUID, queue: str, delay: float | None = None) -> None:
        """A run this process created is due now or after ``delay`` s: claim it then."""

    def note_deadline(self, seconds: float) -> None:
        """A run's execution timeout falls ``seconds`` from now: expire it on time."""

    def work_added(self) -> None:
        """New runs may be due (children started): look for work."""

    def check_cancelled(self) -> None:
        """Runs were cancelled: stop the executions here whose run is gone."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an engine task (not part of any workflow)."""
