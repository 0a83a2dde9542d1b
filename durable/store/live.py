"""The web console's live updates: what its hub (:mod:`durable.ui.live`) reads while
browsers watch: runs created since a moment, and a set of runs as they are now. Each
function runs one named statement of ``queries/live.sql`` and returns typed rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .connections import Conn
from .rows import LiveRun
from .statements import q


def tree_key_of(run_id: uuid.UUID) -> int:
    """The tree key a run id carries (its first 8 bytes, as ``durable_tree_key``)."""
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


def _row(r: Any) -> LiveRun:
    return LiveRun(id=r[0], tree_key=r[1], root_id=r[2], parent_id=r[3], status=r[4], created_at=r[5],
                   last_seq=int(r[6]))


async def clock(conn: Conn) -> datetime:
    """The database's ``now()``."""
    row = await (await conn.execute(q("live_clock"))).fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


async def created_since(conn: Conn, since: datetime, limit: int) -> list[LiveRun]:
    """Runs created after ``since``, oldest first, at most ``limit``."""
    cur = await conn.execute(q("live_runs_since"), {"since": since, "limit": limit})
    return [_row(r) for r in await cur.fetchall()]


async def runs_now(conn: Conn, ids: Iterable[uuid.UUID]) -> list[LiveRun]:
    """These runs as they are now (ids of runs that no longer exist are left out)."""
    ids = list(ids)
    if not ids:
        return []
    cur = await conn.execute(q("live_runs_now"), {"keys": [tree_key_of(i) for i in ids], "ids": ids})
    return [_row(r) for r in await cur.fetchall()]
