"""Waiting for a run's result from outside any workflow (``handle.result()``).

A waiter registers a future for the run's chain here. It is resolved when the run ends in
this process (:meth:`ResultWaits.deliver`), or woken to re-read the database when a
notification says a run it waits on finished elsewhere ('done|<run>', asked for by
``watch``), when the run continued, or when the listener reconnected. However many
callers wait, they share the engine's one LISTEN connection and its pool; a safety
re-check every few seconds covers a notification lost on the way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError, RunCancelledError, RunFailedError, RunNotFoundError, RunTimeoutError
from ..errors import WorkflowNotFoundError
from ..serde import validate
from ..store import runs as store_runs
from ..store.connections import Conn, Pool, run_typed
from ..store.rows import ChainState
from .registry import resolve

TERMINAL = ("completed", "failed", "cancelled")
_SAFETY_RECHECK_S = 15.0  # result waits re-read the run this often in case a notification was lost
_RECHECK = object()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def outcome(state: ChainState | dict[str, Any], workflow: str | None = None) -> Any:
    """A finished run's result (validated against its workflow's result type when that is
    registered here), or its typed error."""
    if isinstance(state, ChainState):
        run_id, status, result, error = state.id, state.status, state.result, state.error
        workflow = state.workflow or workflow
    else:
        run_id, status, result, error = state["id"], state["status"], state["result"], state["error"]
    if status == "completed":
        if workflow:
            try:
                return validate(result, resolve(workflow).result_type, what=f"result of {workflow!r}")
            except WorkflowNotFoundError:
                return result
        return result
    if status == "failed":
        raise RunFailedError(run_id, error, workflow)
    reason = error.get("reason") if isinstance(error, dict) else None
    raise RunCancelledError(run_id, reason)


class ResultWaits:
    """The result waits of one engine (outside callers), by run id."""

    def __init__(self) -> None:
        self._waits: dict[uuid.UUID, list[asyncio.Future[Any]]] = {}

    def deliver(self, run_id: uuid.UUID, status: str, result: Any, error: Any) -> None:
        """The run finished in this process: hand its outcome over without a database read."""
        for fut in self._waits.pop(run_id, ()):
            if not fut.done():
                fut.set_result((status, result, error))

    def wake(self, run_id: uuid.UUID) -> None:
        """Waiters on ``run_id`` re-read its state from the database."""
        for fut in self._waits.pop(run_id, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Everyone re-reads (the listener reconnected: a notification may be lost)."""
        for run_id in list(self._waits):
            self.wake(run_id)

    def release_all(self) -> None:
        """The engine closes: waiters re-read one last time and find it closed."""
        for futs in self._waits.values():
            for f in futs:
                if not f.done():
                    f.set_result(None)
        self._waits.clear()

    async def result(self, pool: Pool, run_id: uuid.UUID, *, timeout: float | None, workflow: str | None,
                     local: Callable[[uuid.UUID], bool]) -> Any:
        """Wait for a run (following continue-as-new) and return its result, or raise
        RunFailedError / RunCancelledError; RunTimeoutError after ``timeout`` seconds.
        ``local(run_id)`` says the run executes in this process (then no database read is
        needed: its outcome is delivered here)."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        watched: uuid.UUID | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RunTimeoutError(f"run {run_id} did not finish within {timeout} s (it keeps running; "
                                      "wait again or cancel it)")
            fut: asyncio.Future[Any] = loop.create_future()
            if local(run_id):
                self._waits.setdefault(run_id, []).append(fut)
            else:
                state = await self._chain_state(pool, run_id)
                if state.status in TERMINAL:
                    return outcome(state, workflow)
                live = state.id
                self._waits.setdefault(live, []).append(fut)
                if watched != live:
                    async def watch(conn: Conn) -> None:
                        await store_runs.watch(conn, live)

                    await run_typed(pool, watch, what=f"watching run {live}")
                    watched = live
                    state = await self._chain_state(pool, run_id)  # it may have finished meanwhile
                    if state.status in TERMINAL:
                        fut.cancel()
                        return outcome(state, workflow)
            wait = _SAFETY_RECHECK_S if remaining is None else min(remaining, _SAFETY_RECHECK_S)
            timer = loop.call_later(wait, _resolve, fut, _RECHECK)
            try:
                got = await fut
            finally:
                timer.cancel()
            if got is _RECHECK:
                for futs in self._waits.values():
                    if fut in futs:
                        futs.remove(fut)
                continue
            if got is not None:
                status, result, error = got
                return outcome({"id": run_id, "status": status, "result": result, "error": error}, workflow)

    @staticmethod
    async def _chain_state(pool: Pool, run_id: uuid.UUID) -> ChainState:
        async def read(conn: Conn) -> ChainState | None:
            return await store_runs.chain_state(conn, run_id)

        state = await run_typed(pool, read, what=f"reading run {run_id}")
        if state is None:
            raise RunNotFoundError(run_id)
        return state
