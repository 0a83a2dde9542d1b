"""Handles to runs, for code outside workflows."""

from __future__ import annotations

import uuid
from typing import Any, Generic, Protocol, TypeVar

from .runtime.cancel import CancelResult
from .store.rows import RunInfo

T = TypeVar("T")

__all__ = ["RunHandle", "RunInfo"]


class _Engine(Protocol):
    async def result(self, run_id: uuid.UUID, *, timeout: float | None = None,
                     workflow: str | None = None, result_type: Any = None) -> Any: ...

    async def info(self, run_id: uuid.UUID) -> RunInfo: ...

    async def signal(self, run_id: uuid.UUID | str, name: str, payload: Any = None, *,
                     delivery_id: str | None = None) -> bool: ...

    async def cancel(self, run_id: uuid.UUID | str, *, graceful: bool = False,
                     reason: str = "cancelled") -> CancelResult: ...


class RunHandle(Generic[T]):
    """A reference to a run: wait for its result, read its status, signal or cancel it.
    ``T`` is the workflow's result type when the handle came from starting a typed
    workflow (``engine.start(order_flow, ...)``), or the ``result_type=`` it was made with
    (a client that starts a workflow by name: the result is converted into that type)."""

    def __init__(self, engine: _Engine, run_id: uuid.UUID, workflow: str | None, result_type: Any = None) -> None:
        self.engine = engine
        self.run_id = run_id
        self.workflow = workflow
        self.result_type = result_type

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id}, workflow={self.workflow!r})"

    async def result(self, timeout: float | None = None) -> T:
        """Wait (event-driven) for the run, following continue-as-new, and return its result."""
        result: T = await self.engine.result(self.run_id, timeout=timeout, workflow=self.workflow,
                                             result_type=self.result_type)
        return result

    async def info(self) -> RunInfo:
        return await self.engine.info(self.run_id)

    async def status(self) -> str:
        return (await self.info()).status

    async def signal(self, name: str, payload: Any = None, *, delivery_id: str | None = None) -> bool:
        return await self.engine.signal(self.run_id, name, payload, delivery_id=delivery_id)

    async def cancel(self, *, graceful: bool = False) -> CancelResult:
        return await self.engine.cancel(self.run_id, graceful=graceful)
