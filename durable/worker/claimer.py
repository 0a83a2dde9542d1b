"""Claiming: batch claims of due runs (and runs whose executor died), woken by kicks
(notifications, freed capacity) or, as a fallback, by a jittered poll."""

from __future__ import annotations

import asyncio
import logging
import random

from ..observe import hooks
from ..runtime.runs import RunTable
from ..store import runs as store_runs
from ..store.rows import Claim
from .loop import BackgroundLoop

log = logging.getLogger(__name__)


class Claimer(BackgroundLoop):
    name = "claimer"

    def __init__(self, runs: RunTable) -> None:
        super().__init__()
        self.runs = runs
        self.settings = runs.settings
        self._kick = asyncio.Event()
        self._db_down = False

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
        s = self.settings
        backoff = 0.0
        while not self._stopping:
            interval = max(backoff, s.poll_interval_s * random.uniform(0.8, 1.2))
            try:
                await asyncio.wait_for(self._kick.wait(), interval)
                source = "notify"
            except asyncio.TimeoutError:
                source = "poll"
            self._kick.clear()
            if self.runs.closing or self._stopping:
                return
            capacity = self.runs.capacity()
            if capacity <= 0:
                self.runs.starved = True
                continue
            self.runs.starved = False
            limit = min(capacity, s.claim_batch)
            try:
                with self.runs.claiming():  # (until the claimed runs are registered here)
                    claims = await self.claim(limit)
                    if claims:
                        hooks.emit("claim.batch", count=len(claims), source=source)
                    for claim in claims:
                        self.runs.on_claimed(claim, source)
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
                hooks.emit("wake.poll", count=len(claims))
            if len(claims) == limit:
                self._kick.set()  # more may be due

    async def claim(self, limit: int) -> list[Claim]:
        """Read which runs are claimable (lock-free, per queue in due order), then claim up to
        ``limit`` of them, each routed to its tree (rows others hold are skipped)."""
        s = self.settings
        workflows = self.runs.workflow_keys()
        async with self.runs.pool.connection() as conn:
            found = await store_runs.claimable(conn, queues=list(s.queues), workflows=workflows,
                                               owner=self.runs.owner, grace=s.sticky_grace_s, limit=limit * 2 + 8)
            if not found:
                return []
            # twice the candidates, so that runs another process takes meanwhile are replaced
            # by the next ones; never more than ``limit`` claimed (a full batch means more may
            # be due: the claimer looks again at once instead of waiting for a poll)
            return await store_runs.claim(conn, found[: limit * 2], workflows=workflows, owner=self.runs.owner,
                                          grace=s.sticky_grace_s, limit=limit, per_run=self.runs.distributed)
