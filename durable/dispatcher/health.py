"""Health endpoints served next to /metrics: ``/healthz`` (the process is alive and its
event loop answers) and ``/readyz`` (database reachable and the listener connected)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Route = Callable[[], tuple[int, str]]

_LOOP_STALL_S = 30.0  # /healthz fails when the event loop has not ticked for this long


class Health:
    """Routes for :func:`durable.metrics.start_metrics_server`. They run on the metrics
    server's thread, so they only read state the event loop keeps up to date."""

    def __init__(self, readiness: Route) -> None:
        self._readiness = readiness
        self.last_tick = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._tick(), name="dispatcher-health-tick")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _tick(self) -> None:
        while True:  # in-process only: no database work
            self.last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    def routes(self) -> dict[str, Route]:
        return {"/healthz": self.healthz, "/readyz": self.readyz}

    def healthz(self) -> tuple[int, str]:
        stalled = time.monotonic() - self.last_tick
        if stalled > _LOOP_STALL_S:
            return 503, f"event loop stalled for {stalled:.0f} s"
        return 200, "ok"

    def readyz(self) -> tuple[int, str]:
        return self._readiness()
