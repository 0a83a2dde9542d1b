"""Heartbeating: one statement per beat renews every lease this process holds; an
execution whose lease is gone (cancelled, or claimed by another after expiry) stops."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..observe import hooks
from ..store import queries
from ..runtime.execution import LeaseLost
from .loop import BackgroundLoop

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("durable.worker.heartbeat")


class Heartbeat(BackgroundLoop):
    name = "heartbeat"

    def __init__(self, engine: "Engine") -> None:
        super().__init__()
        self.engine = engine
        self.skipped = 0

    async def run(self) -> None:
        failing = False
        busy = False
        while not self._stopping:
            ttl = self.engine.settings.lease_ttl_s
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
        held = [(ex.run_id, ex.token) for ex in list(self.engine.active.values()) if ex.token is not None]
        self.skipped = 0
        if not held:
            return 0
        async with self.engine.pool.connection() as conn:
            cur = await conn.execute(queries.HEARTBEAT, {
                "ttl": self.engine.settings.lease_ttl_s, "ids": [h[0] for h in held], "tokens": [h[1] for h in held]})
            seen = {r[0]: r[1] for r in await cur.fetchall()}
        lost = 0
        for run_id, token in held:
            ex = self.engine.active.get(run_id)
            if run_id not in seen and ex is not None and ex.token == token:
                lost += 1
                log.info("run %s: lease lost (cancelled or claimed elsewhere); stopping its execution", run_id,
                         extra={"run_id": str(run_id), "workflow": ex.wf.name})
                hooks.emit("lease.lost", run_id=run_id, workflow=ex.wf.name)
                ex.stop(LeaseLost())
        hooks.emit("heartbeat", leases=len(held), lost=lost)
        self.skipped = sum(1 for renewed in seen.values() if not renewed)
        return lost
