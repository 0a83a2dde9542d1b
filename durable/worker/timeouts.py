"""Execution timeouts: fail runs past their deadline (``durable_expire_runs``).

Every ``5 × poll_interval_s`` (jittered, so processes sharing a database spread out)
one statement looks for overdue runs through a partial index on ``deadline_at`` that
only holds unfinished runs with a timeout; with none overdue that is one index probe,
so an idle process costs the database almost nothing. An overdue run fails with
``WorkflowTimeoutError`` in the same transaction that applies its children's
parent-close policies and wakes its parent; its executor, wherever it is, is told by
notification and stops. Several processes expiring at once skip each other's rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from .loop import BackgroundLoop

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("durable.worker.timeouts")

BATCH = 100


class Timeouts(BackgroundLoop):
    name = "timeouts"

    def __init__(self, engine: "Engine") -> None:
        super().__init__()
        self.engine = engine
        self._kick = asyncio.Event()
        self._failing = False
        self.expired = 0

    def kick(self) -> None:
        """Look for overdue runs now (tests moving the clock, for example)."""
        self._kick.set()

    async def run(self) -> None:
        s = self.engine.settings
        while not self._stopping:
            try:
                await asyncio.wait_for(self._kick.wait(), 5 * s.poll_interval_s * random.uniform(0.8, 1.2))
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            if self._stopping or self.engine.closing or self.engine.pool is None:
                continue
            await self.expire()

    async def expire(self) -> int:
        """One round: expire overdue runs in batches until none is left; returns how many."""
        total = 0
        while not self._stopping:
            try:
                n = await self.engine.lifecycle.expire_overdue(BATCH)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down or a lock conflict: the next round retries
                if not self._failing:
                    log.warning("expiring overdue runs failed (%s); retrying next round", exc)
                    self._failing = True
                return total
            if self._failing:
                log.warning("expiring overdue runs works again")
                self._failing = False
            total += n
            if n < BATCH:
                break
        self.expired += total
        return total
