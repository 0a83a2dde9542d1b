"""A run's history as a document (``durable export``, ``durable.testing.Replayer``): the
run's row and its journal, read with the named statements of ``queries/history.sql`` and
``queries/runs.sql``."""

from __future__ import annotations

import uuid

from psycopg.rows import dict_row

from .connections import Conn
from .rows import Event, HistoryRun
from .runs import key_of, load_history
from .statements import q


async def history_of(conn: Conn, run_id: uuid.UUID) -> tuple[HistoryRun, list[Event]] | None:
    """The run and its journal, in seq order (None when there is no such run)."""
    key = await key_of(conn, run_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q("history_run"), {"key": key, "id": run_id})
        row = await cur.fetchone()
    if row is None:
        return None
    events = await load_history(conn, key, run_id)
    run = HistoryRun(id=row["id"], root_id=row["root_id"], parent_id=row["parent_id"], workflow=row["workflow"],
                     version=row["version"], status=row["status"], input=row["input"], attempt=row["attempt"] or 1,
                     grafted=bool(row["grafted"]))
    return run, events
