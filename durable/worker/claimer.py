"""Claiming: batch claims of due runs (and runs whose executor died), woken by kicks
(notifications, freed capacity) or, as a fallback, by a jittered poll."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from psycopg.rows import dict_row

from ..observe import hooks
from ..store import queries
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
        # True while due runs may be waiting for capacity: a finished execution kicks the
        # claimer only then
        self.starved = False

    @property
    def db_ok(self) -> bool:
        """False while claims fail (database unreachable); for readiness probes."""
        return not self._db_down

    def kick(self) -> None:
        self._kick.set()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop after the claim in progress, if any: cancelling a claim mid-statement could
        commit leases whose rows never reach us (stranded until they expire)."""
        self._stopping = True
        self._kick.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass
        await super().stop()

    async def run(self) -> None:
        s = self.engine.settings
        backoff = 0.0
        while not self._stopping:
            interval = max(backoff, s.poll_interval_s * random.uniform(0.8, 1.2))
            try:
                await asyncio.wait_for(self._kick.wait(), interval)
                source = "notify"
            except asyncio.TimeoutError:
                source = "poll"
            self._kick.clear()
            if self.engine.closing or self._stopping:
                return
            capacity = self.engine.capacity()
            if capacity <= 0:
                self.starved = True
                continue
            self.starved = False
            limit = min(capacity, s.claim_batch)
            try:
                rows = await self.claim(limit)
            except Exception as exc:
                if not self._db_down:
                    log.warning("claiming failed (database unreachable?): %s; retrying with backoff", exc)
                    self._db_down = True
                backoff = min(max(2 * backoff, 0.25), 10.0)
                continue
            backoff = 0.0
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
