"""Execution timeouts: fail runs past their deadline (``durable_expire_runs``).

The loop arms a timer for the earliest deadline of any unfinished run (one probe of the
partial index on ``deadline_at``, which only holds unfinished runs with a timeout), so a
timeout fires within milliseconds of its due time; a run started or claimed here with an
earlier deadline re-arms it (``note``). Every ``5 × poll_interval_s`` (jittered, so
processes sharing a database spread out) it looks anyway, as the fallback. An overdue run
fails with ``WorkflowTimeoutError`` in the same transaction that applies its children's
parent-close policies and wakes its parent; its executor, wherever it is, is told by
notification and stops. Several processes expiring at once skip each other's rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ..runtime import runlog
from ..runtime.runs import RunTable
from ..store import lifecycle as store_lifecycle
from .loop import BackgroundLoop

log = logging.getLogger(__name__)

BATCH = 100
_SLACK_S = 0.003  # fire just after the deadline, so the database sees it passed


class Timeouts(BackgroundLoop):
    name = "timeouts"

    def __init__(self, runs: RunTable) -> None:
        super().__init__()
        self.runs = runs
        self.settings = runs.settings
        self.next_deadline_in: float | None = None  # seconds until the earliest deadline (None: none)
        self._kick = asyncio.Event()
        self._expire_now = False
        self._wake_at = 0.0  # monotonic time of the next round
        self._failing = False
        self._last_expired = 0
        self.expired = 0

    def kick(self) -> None:
        """Look for overdue runs now (tests moving the clock, for example)."""
        self._expire_now = True
        self._kick.set()

    def note(self, seconds: float) -> None:
        """A run with a deadline ``seconds`` from now started or was claimed here: expire
        it on time even if the loop planned to sleep longer."""
        at = time.monotonic() + max(0.0, seconds) + _SLACK_S
        if at < self._wake_at:
            self._wake_at = at
            self._kick.set()

    def _fallback(self) -> float:
        return 5 * self.settings.poll_interval_s * random.uniform(0.8, 1.2)

    async def run(self) -> None:
        self._wake_at = time.monotonic() + self._fallback()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._kick.wait(), max(0.0, self._wake_at - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            if not self._expire_now and time.monotonic() < self._wake_at:
                continue  # re-armed for an earlier deadline
            self._expire_now = False
            if self._stopping or self.runs.closing:
                self._wake_at = time.monotonic() + self._fallback()
                continue
            self._last_expired = await self.expire()
            self._wake_at = time.monotonic() + self._next_round_in()

    def _next_round_in(self) -> float:
        """Seconds until the earliest deadline the last round saw (the fallback if none)."""
        fallback = self._fallback()
        left = self.next_deadline_in
        if left is None:
            return fallback
        if left <= 0:  # overdue still: just expired (a stale read: look again now) or skipped (locked)
            return _SLACK_S if self._last_expired else min(fallback, 0.25)
        return min(fallback, left + _SLACK_S)

    async def expire(self) -> int:
        """One round: expire overdue runs in batches until none is left; returns how many."""
        total = 0
        while not self._stopping:
            try:
                n = await self.expire_overdue(BATCH)
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

    async def expire_overdue(self, limit: int) -> int:
        """Fail runs past their execution timeout (one transaction); returns how many.
        ``next_deadline_in`` is then the seconds until the earliest deadline left."""
        async with self.runs.pool.connection() as conn:
            got = await store_lifecycle.expire_overdue(conn, limit, self.settings.max_child_depth)
        self.next_deadline_in = got.next_deadline_in_s
        if got.expired:
            for run in got.runs:  # one line per run (runlog); their executors log at DEBUG only
                runlog.outcome(logging.WARNING, "timed_out", run.id, run.workflow, run.attempt,
                               error_type="WorkflowTimeoutError")
            if got.expired > len(got.runs):
                log.info("%d run(s) exceeded their execution timeout and failed with WorkflowTimeoutError",
                         got.expired - len(got.runs))
            self.runs.check_cancelled()
        return got.expired
