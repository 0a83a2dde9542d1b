"""Sync steps run in threads, and a thread cannot be stopped: after a step's timeout, a
cancel or a hand-over its thread may still be running. In this process a new attempt of
the same step (same run, same operation) waits until the previous attempt's thread has
returned, so the two never overlap here. Across processes, a hand-over after lease expiry
can still overlap a stuck thread of the old process: steps must be idempotent (at least
once), as the README says."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from typing import Any, Callable

log = logging.getLogger("durable.steps")

Where = tuple[uuid.UUID, Any]  # (run id, operation key)


class SyncSteps:
    def __init__(self) -> None:
        self._running: dict[Where, asyncio.Event] = {}

    async def start(self, where: Where, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> "asyncio.Future[Any]":
        """Start ``fn(*args, **kwargs)`` in a worker thread once no earlier attempt of the
        same step is still running here; returns the future of its result."""
        previous = self._running.get(where)
        if previous is not None and not previous.is_set():
            log.info("run %s: waiting for the previous attempt of a sync step to return before retrying it",
                     where[0], extra={"run_id": str(where[0])})
            await previous.wait()
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        self._running[where] = done
        context = contextvars.copy_context()

        def call() -> Any:
            try:
                return context.run(fn, *args, **kwargs)
            finally:
                try:
                    loop.call_soon_threadsafe(self._finished, where, done)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

        return loop.run_in_executor(None, call)

    def _finished(self, where: Where, done: asyncio.Event) -> None:
        done.set()
        if self._running.get(where) is done:
            del self._running[where]
