"""Claiming: batch claims of due runs (and runs whose executor died), woken by kicks
(notifications, freed capacity) or, as a fallback, by a jittered poll."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from psycopg.rows import dict_row

from .. import hooks, queries
from .loop import BackgroundLoop

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("durable.worker.claimer")


class Claimer(BackgroundLoop):
    name = "claimer"

    def __init__(self, engine: "Engine") -> None:
        super().__init__()
        self.engine = engine
        self._kick = asyncio.Event()
        self._db_down = False

    def kick(self) -> None:
        self._kick.set()

    async def run(self) -> None:
        s = self.engine.settings
        while not self._stopping:
            interval = s.poll_interval_s * random.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(self._kick.wait(), interval)
                source = "notify"
            except asyncio.TimeoutError:
                source = "poll"
            self._kick.clear()
            if self.engine.closing:
                return
            capacity = self.engine.capacity()
            if capacity <= 0:
                continue
            limit = min(capacity, s.claim_batch)
            try:
                rows = await self.claim(limit)
            except Exception as exc:
                if not self._db_down:
                    log.warning("claiming failed (database unreachable?): %s; retrying", exc)
                    self._db_down = True
                await asyncio.sleep(min(5.0, s.poll_interval_s))
                continue
            if self._db_down:
                log.warning("claiming works again")
                self._db_down = False
            if source == "poll":
                hooks.emit("wake.poll", count=len(rows))
            if rows:
                hooks.emit("claim.batch", count=len(rows), source=source)
                for row in rows:
                    self.engine.on_claimed(row, source)
                if len(rows) == limit:
                    self._kick.set()  # more may be due

    async def claim(self, limit: int) -> list[dict]:
        e = self.engine
        s = e.settings
        async with e.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(queries.CLAIM_DUE, {
                "queues": list(s.queues), "workflows": e.workflow_keys(), "owner": e.owner,
                "grace": s.sticky_grace_s, "ttl": s.lease_ttl_s, "limit": limit, "scan": limit * 4 + 16})
            return await cur.fetchall()  # type: ignore[return-value]
