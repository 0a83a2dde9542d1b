"""Heartbeating: one cheap write per beat (this process's row in durable_workers) renews
its lease on every run it holds, and one read finds the leases it lost (cancelled, or
claimed by another process after this one's expired): those executions stop
(:meth:`durable.runtime.runs.RunTable.renew_leases`)."""

from __future__ import annotations

import asyncio
import logging

from ..runtime.runs import RunTable
from .loop import BackgroundLoop

log = logging.getLogger(__name__)


class Heartbeat(BackgroundLoop):
    name = "heartbeat"

    def __init__(self, runs: RunTable) -> None:
        super().__init__()
        self.runs = runs

    async def run(self) -> None:
        failing = False
        while not self._stopping:
            ttl = self.runs.settings.lease_ttl_s
            await asyncio.sleep(ttl / 3 if not failing else min(1.0, ttl / 10))
            try:
                await self.beat()
            except Exception as exc:
                if not failing:  # once per outage, not once per beat
                    log.warning("heartbeat failed: %s; leases expire after %.0f s unless a beat works "
                                "again (their runs then resume elsewhere)", exc, ttl)
                failing = True
                continue
            if failing:
                log.warning("heartbeats work again")
                failing = False

    async def beat(self) -> int:
        """Renew this process's leases now; returns how many were lost."""
        return await self.runs.renew_leases()
