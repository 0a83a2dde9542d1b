"""A named asyncio loop with start/stop, the shape of every background concern."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("durable.worker")


class BackgroundLoop:
    name = "loop"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._guarded(), name=f"durable-{self.name}")

    async def _guarded(self) -> None:
        while not self._stopping:
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the process alive; the loop restarts after a pause
                log.exception("%s loop crashed; restarting in 1 s", self.name)
                await asyncio.sleep(1.0)

    async def run(self) -> None:  # overridden
        raise NotImplementedError

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
