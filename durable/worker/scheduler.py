"""Firing schedules: sleep until the earliest due schedule (one indexed probe per wake),
then run firing rounds (:meth:`durable.runtime.schedules.Schedules.fire_due`) until none is
due. A notification ('schedules|', sent when a schedule is created, changed, paused,
resumed or deleted) wakes it early; with nothing due it looks again every
``5 × poll_interval_s`` (jittered) as the fallback. Several dispatchers run it at once:
each round locks the due rows with SKIP LOCKED, so each tick is fired by one of them, and
a tick fired twice (a restart) is one run (its run id comes from the tick)."""

from __future__ import annotations

import asyncio
import logging
import random

from ..config import EngineSettings
from ..runtime.schedules import Schedules
from .loop import BackgroundLoop

log = logging.getLogger(__name__)

BATCH = 100  # schedules per firing round (one transaction): the first commit early
PARALLEL = 4  # firing rounds at once
_SLACK_S = 0.002  # wake just after the tick, so the database sees it due
_CONTENDED_S = 0.05  # a due row another dispatcher holds: look again after this (doubling)


class Scheduler(BackgroundLoop):
    name = "scheduler"

    def __init__(self, settings: EngineSettings, schedules: Schedules) -> None:
        super().__init__()
        self.settings = settings
        self.schedules = schedules
        self._kick = asyncio.Event()
        self.rounds = 0
        self.probes = 0

    def kick(self) -> None:
        """Schedules changed: re-read the earliest due time now."""
        self._kick.set()

    def _fallback(self) -> float:
        return 5 * self.settings.poll_interval_s * random.uniform(0.8, 1.2)

    async def run(self) -> None:
        failing = False
        contended = 0.0
        while not self._stopping:
            try:
                wait = await self._step()
                if wait == 0.0:  # due, but held by another dispatcher: back off a little
                    contended = min(max(2 * contended, _CONTENDED_S), 1.0)
                    wait = contended
                else:
                    contended = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: try again after a pause
                if not failing:
                    log.warning("firing schedules failed (%s); retrying", exc)
                    failing = True
                wait = min(1.0, self._fallback())
            else:
                if failing:
                    log.warning("firing schedules works again")
                    failing = False
            try:
                await asyncio.wait_for(self._kick.wait(), wait)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def _step(self) -> float:
        """Fire what is due; return how long to sleep (0.0: due rows held elsewhere)."""
        while not self._stopping:
            self.probes += 1
            due_in = await self.schedules.next_due_in()
            if due_in is None:
                return self._fallback()
            if due_in > 0:
                return min(due_in + _SLACK_S, self._fallback())
            # rounds on PARALLEL connections at once (SKIP LOCKED: each takes other rows), so
            # a thousand schedules due at one second commit in slices, the first ones early
            parallel = max(1, min(PARALLEL, self.settings.pool_size // 2))  # leave connections to the rest
            handled = await asyncio.gather(*(self.schedules.fire_due(BATCH) for _ in range(parallel)))
            self.rounds += parallel
            if sum(handled) == 0:
                return 0.0
        return 0.0
