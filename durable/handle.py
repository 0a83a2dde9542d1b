"""Handles to runs, for code outside workflows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine


@dataclass(frozen=True)
class RunInfo:
    """A run's row as stored (status, input, result or error, lease, timing)."""

    id: uuid.UUID
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    chain_root_id: uuid.UUID
    continued_to: uuid.UUID | None
    workflow: str
    version: int
    queue: str
    status: str
    input: Any
    result: Any
    error: Any
    attempt: int
    depth: int
    lease_owner: str | None
    lease_token: int | None
    lease_expires_at: datetime | None
    next_wakeup_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunHandle:
    """A reference to a run: wait for its result, read its status, signal or cancel it."""

    def __init__(self, engine: "Engine", run_id: uuid.UUID, workflow: str | None) -> None:
        self.engine = engine
        self.run_id = run_id
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id}, workflow={self.workflow!r})"

    async def result(self, timeout: float | None = None) -> Any:
        """Wait (event-driven) for the run, following continue-as-new, and return its result."""
        return await self.engine.result(self.run_id, timeout=timeout, workflow=self.workflow)

    async def info(self) -> RunInfo:
        return await self.engine.info(self.run_id)

    async def status(self) -> str:
        return (await self.info()).status

    async def signal(self, name: str, payload: Any = None, *, delivery_id: str | None = None) -> bool:
        return await self.engine.signal(self.run_id, name, payload, delivery_id=delivery_id)

    async def cancel(self, *, graceful: bool = False) -> int:
        return await self.engine.cancel(self.run_id, graceful=graceful)
