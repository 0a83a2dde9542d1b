"""``TimeControl``: move the engine's clock (``durable_now()`` in the schema) forward so
timers, sleeps, retry waits, signal timeouts and execution timeouts fire without
waiting. Leases keep using the real clock, so advancing time never expires a lease.
"""

from __future__ import annotations

import math

from ..engine import Engine
from ..errors import ConfigurationError
from ..store.events import db_now
from ..store.lifecycle import set_clock_offset


class TimeControl:
    """``async with TimeControl(engine) as clock: await clock.advance(3600)``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offset = 0.0

    async def __aenter__(self) -> "TimeControl":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reset()

    async def advance(self, seconds: float) -> float:
        """Move the engine's clock forward by ``seconds``; due runs are claimed at once."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ConfigurationError(f"advance() takes a number of seconds, got {seconds!r}")
        if seconds < 0:
            raise ConfigurationError("time only moves forward; use reset() to go back to the real clock")
        self.offset += seconds
        await self._set(self.offset)
        return self.offset

    async def reset(self) -> None:
        self.offset = 0.0
        await self._set(0.0)

    async def _set(self, offset: float) -> None:
        e = self.engine
        pool = e._require_open()
        async with pool.connection() as conn:
            await set_clock_offset(conn, offset)
        # parked runs with local timers and due runs elsewhere: look again now
        e.runs.wake_all_parked()
        if e.claimer is not None:
            e.claimer.kick()
        if e.timeouts is not None:  # overdue runs: expire them now, not at the next round
            e.timeouts.kick()
        if e.scheduler is not None:  # schedules due at the new time fire now
            e.scheduler.kick()

    async def now(self) -> float:
        """The engine's clock (epoch seconds), offset included."""
        async with self.engine._require_open().connection() as conn:
            return await db_now(conn)

