"""Background retention: run :func:`durable.retention.gc` every ``retention_interval_s``
(jittered, so dispatchers sharing a database spread out) when
``EngineSettings.retention_s`` is set. Batches skip rows another collector holds, so
several processes collecting at once is safe; each pass is bounded in batches so a huge
backlog is worked off over several intervals instead of in one long burst."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..observe import hooks
from ..store.retention import DEFAULT_BATCH, gc
from .loop import BackgroundLoop

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("durable.worker.retention")

MAX_BATCHES_PER_ROUND = 200


class Retention(BackgroundLoop):
    name = "retention"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.rounds = 0
        self.deleted = 0

    async def run(self) -> None:
        s = self.engine.settings
        first = True
        while not self._stopping:
            # the first round soon after start (a fraction of the interval), then every interval
            base = s.retention_interval_s * (0.1 if first else 1.0)
            await asyncio.sleep(base * random.uniform(0.8, 1.2))
            first = False
            if self.engine.closing or self.engine.pool is None or s.retention_s is None:
                continue
            await self.collect()

    async def collect(self) -> int:
        """One retention round now; returns how many runs it deleted."""
        s = self.engine.settings
        if s.retention_s is None:
            return 0
        try:
            res = await gc(self.engine.pool, s.retention_s, batch=DEFAULT_BATCH, max_batches=MAX_BATCHES_PER_ROUND)
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
