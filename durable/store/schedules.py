"""Schedules: their rows, the dispatchers' probe and firing round, the runs they started.

Each function runs one named statement of ``queries/schedules.sql`` on the connection it is
given and returns typed rows (:class:`~durable.store.rows.Schedule`, ...). The firing round
(:func:`lock_due`, :func:`start_runs`, :func:`advance`) runs in one transaction the caller
opens: the due rows are locked with SKIP LOCKED (dispatchers never wait for each other),
their runs started through ``durable_start_run`` and the rows advanced.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, cast

from psycopg.rows import dict_row

from .connections import Conn
from .rows import RunToStart, Schedule, ScheduleAdvance, tree_key_of
from .statements import q


def _schedule(row: dict[str, Any]) -> Schedule:
    return Schedule(**{k: v for k, v in row.items() if k != "db_now"})


async def now(conn: Conn) -> datetime:
    """The engine's clock (``durable_now()``: moves with TimeControl in tests)."""
    row = await (await conn.execute(q("schedules_now"))).fetchone()
    assert row is not None
    return cast(datetime, row[0])


async def upsert(conn: Conn, *, id: str, workflow: str, version: int, queue: str, input: str, cron: str | None,
                 every_s: float | None, timezone: str, overlap: str, catchup_window_s: float, paused: bool,
                 declared: bool, next_fire_at: datetime) -> Schedule | None:
    """Create the schedule or change its definition; None when ``id`` belongs to a schedule
    of another workflow (nothing written)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_upsert"), {
        "id": id, "workflow": workflow, "version": version, "queue": queue, "input": input, "cron": cron,
        "every_s": every_s, "timezone": timezone, "overlap": overlap, "catchup_window_s": catchup_window_s,
        "paused": paused, "declared": declared, "next_fire_at": next_fire_at})
    row = await cur.fetchone()
    return None if row is None else _schedule(row)


async def get(conn: Conn, schedule_id: str) -> Schedule | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_get"), (schedule_id,))
    row = await cur.fetchone()
    return None if row is None else _schedule(row)


async def list_all(conn: Conn, *, workflow: str | None = None, limit: int = 1000) -> list[Schedule]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_list"), {"workflow": workflow, "limit": limit})
    return [_schedule(r) for r in await cur.fetchall()]


async def pause(conn: Conn, schedule_id: str, note: str) -> Schedule | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_pause"), {"id": schedule_id, "note": note})
    row = await cur.fetchone()
    return None if row is None else _schedule(row)


async def resume(conn: Conn, schedule_id: str, next_fire_at: datetime) -> Schedule | None:
    """Resume a paused schedule from ``next_fire_at``; None when it was not paused."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_resume"), {"id": schedule_id, "next": next_fire_at})
    row = await cur.fetchone()
    return None if row is None else _schedule(row)


async def delete(conn: Conn, schedule_id: str) -> bool:
    row = await (await conn.execute(q("schedule_delete"), (schedule_id,))).fetchone()
    return row is not None


async def started(conn: Conn, schedule_id: str, run_id: uuid.UUID) -> None:
    """A run started by trigger becomes the schedule's last run."""
    await conn.execute(q("schedule_started"), {"id": schedule_id, "run": run_id, "key": tree_key_of(run_id)})


async def notify(conn: Conn) -> None:
    """Wake the dispatchers' schedule loops (delivered when the transaction commits)."""
    await conn.execute(q("schedules_notify"))


async def next_due_in(conn: Conn) -> float | None:
    """Seconds until the earliest due schedule (negative: overdue; None: nothing is due)."""
    row = await (await conn.execute(q("schedules_next_due"))).fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def lock_due(conn: Conn, limit: int) -> tuple[datetime | None, list[Schedule]]:
    """The engine's clock and the due schedules no other transaction holds, locked (in a
    transaction the caller opened)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedules_lock_due"), (limit,))
    rows = await cur.fetchall()
    if not rows:
        return None, []
    return cast(datetime, rows[0]["db_now"]), [_schedule(r) for r in rows]


async def run_states(conn: Conn, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, datetime, datetime | None]]:
    """Status, created_at and finished_at of these runs (absent: no such run)."""
    if not run_ids:
        return {}
    cur = await conn.execute(q("schedules_run_states"), {"keys": [tree_key_of(r) for r in run_ids], "ids": run_ids})
    return {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


async def start_runs(conn: Conn, runs: list[RunToStart]) -> set[uuid.UUID]:
    """Start these runs (pending, due now); returns the ids started now (an id already
    taken is a tick started before)."""
    if not runs:
        return set()
    doc = json.dumps([{"id": str(r.id), "workflow": r.workflow, "version": r.version, "queue": r.queue,
                       "input": r.input, "timeout": r.timeout} for r in runs])
    cur = await conn.execute(q("schedules_start_runs"), (doc,))
    return {r[0] for r in await cur.fetchall()}


async def advance(conn: Conn, rows: list[ScheduleAdvance]) -> None:
    """Write back what a firing round did to each locked row."""
    if not rows:
        return
    doc = json.dumps([{"id": r.id, "next_fire_at": _ts(r.next_fire_at), "due_at": _ts(r.due_at),
                       "buffered_at": _ts(r.buffered_at), "last_fire_at": _ts(r.last_fire_at),
                       "last_run_id": None if r.last_run_id is None else str(r.last_run_id),
                       "last_run_key": None if r.last_run_id is None else tree_key_of(r.last_run_id),
                       "fired": r.fired, "skipped": r.skipped, "missed": r.missed} for r in rows])
    await conn.execute(q("schedules_advance"), (doc,))
