"""Heartbeating: one statement per beat renews every lease this process holds; an
execution whose lease is gone (cancelled, or claimed by another after expiry) stops
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
        self.skipped = 0

    async def run(self) -> None:
        failing = False
        busy = False
        while not self._stopping:
            ttl = self.runs.settings.lease_ttl_s
            # a lease skipped because its row was locked is retried soon, long before it expires
            await asyncio.sleep(min(0.2, ttl / 20) if busy else ttl / 3)
            try:
                await self.beat()
                busy = self.skipped > 0
            except Exception as exc:
                if not failing:  # once per outage, not once per beat
                    log.warning("heartbeat failed: %s; leases expire after %.0f s unless a beat works "
                                "again (their runs then resume elsewhere)", exc, ttl)
                failing = True
                busy = False
                continue
            if failing:
                log.warning("heartbeats work again")
                failing = False

    async def beat(self) -> int:
        """Renew every lease held here; returns how many were lost. ``skipped`` counts leases
        whose rows another transaction held locked (still valid; the loop retries them soon)."""
        lost, self.skipped = await self.runs.renew_leases()
        return lost
