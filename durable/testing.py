"""Helpers for testing workflows against a real PostgreSQL.

``TimeControl`` moves the engine's clock (``durable_now()`` in the schema) forward so
timers, sleeps, retry waits, signal timeouts and execution timeouts fire without
waiting. Leases keep using the real clock, so advancing time never expires a lease.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from psycopg import sql

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .engine import Engine


class TimeControl:
    """``async with TimeControl(engine) as clock: await clock.advance(3600)``."""

    def __init__(self, engine: "Engine") -> None:
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
        body = f"SELECT now() + make_interval(secs => {float(offset)!r})"
        stmt = sql.SQL("CREATE OR REPLACE FUNCTION durable_now() RETURNS timestamptz "
                       "LANGUAGE sql STABLE AS {}").format(sql.Literal(body))
        async with e.pool.connection() as conn:
            await conn.execute(stmt)
        # parked runs with local timers and due runs elsewhere: look again now
        for run_id in list(e.parked):
            e._spawn(e.claim_one(run_id, "local"))
        e.kick_claimer()
        timeouts = getattr(e, "timeouts", None)
        if timeouts is not None:  # overdue runs: expire them now, not at the next round
            timeouts.kick()

    async def now(self) -> float:
        """The engine's clock (epoch seconds), offset included."""
        async with self.engine.pool.connection() as conn:
            row = await (await conn.execute("SELECT extract(epoch FROM durable_now())::float8")).fetchone()
        return float(row[0])  # type: ignore[index]

