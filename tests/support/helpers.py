"""Small helpers shared by tests: read rows on a fresh connection, poll until a condition
holds, open an engine on the test's schema with fast polls, read a run's status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import durable


async def rows(db: Any, sql: str, *args: Any) -> list[tuple]:
    c = await db.conn()
    try:
        return await (await c.execute(sql, args)).fetchall()
    finally:
        await c.close()


async def until(pred: Any, timeout: float = 20.0, what: str = "condition", interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def new_engine(db: Any, **kw: Any) -> durable.Engine:
    opts: dict[str, Any] = dict(schema=db.schema, poll_interval_s=0.2, lease_ttl_s=5.0, sticky_grace_s=0.5)
    opts.update(kw)
    return durable.Engine(db.dsn, **opts)


async def status_of(db: Any, run_id: Any) -> str | None:
    r = await rows(db, "SELECT status FROM durable_runs WHERE id = %s", run_id)
    return r[0][0] if r else None


async def execute(db: Any, sql: str, *args: Any) -> int:
    """Run one statement on a fresh connection; returns its row count."""
    c = await db.conn()
    try:
        cur = await c.execute(sql, args)
        await c.commit()
        return cur.rowcount
    finally:
        await c.close()
