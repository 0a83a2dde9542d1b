"""Background retention: run :func:`durable.retention.gc` every ``retention_interval_s``
(jittered, so dispatchers sharing a database spread out) when
``EngineSettings.retention_s`` is set. Batches skip rows another collector holds, so
several processes collecting at once is safe; each pass is bounded in batches so a huge
backlog is worked off over several intervals instead of in one long burst."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from ..config import EngineSettings
from ..observe import hooks
from ..store.connections import Pool
from ..store.retention import DEFAULT_BATCH, gc
from .loop import BackgroundLoop

log = logging.getLogger(__name__)

MAX_BATCHES_PER_ROUND = 200


class Retention(BackgroundLoop):
    name = "retention"

    def __init__(self, settings: EngineSettings, pool: Callable[[], Pool | None]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.rounds = 0
        self.deleted = 0

    async def run(self) -> None:
        s = self.settings
        first = True
        while not self._stopping:
            # the first round soon after start (a fraction of the interval), then every interval
            base = s.retention_interval_s * (0.1 if first else 1.0)
            await asyncio.sleep(base * random.uniform(0.8, 1.2))
            first = False
            if self.pool() is None or s.retention_s is None:
                continue
            await self.collect()

    async def collect(self) -> int:
        """One retention round now; returns how many runs it deleted."""
        s = self.settings
        pool = self.pool()
        if s.retention_s is None or pool is None:
            return 0
        try:
            res = await gc(pool, s.retention_s, batch=DEFAULT_BATCH, max_batches=MAX_BATCHES_PER_ROUND)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # database down or restarting: the next round tries again
            log.warning("retention round failed (%s); retrying in %.0f s", exc, s.retention_interval_s)
            return 0
        self.rounds += 1
        self.deleted += res.runs
        hooks.emit("gc.completed", runs=res.runs, events=res.events, signals=res.signals,
                   batches=res.batches, duration_s=res.seconds)
        return res.runs
