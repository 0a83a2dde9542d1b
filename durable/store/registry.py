"""The workflow registry and the process list: what the processes executing runs have
registered (``durable_workflows``, for starting a workflow by name from any client) and
which processes are alive and serve which queues (``durable_workers``, written by their
heartbeat: :func:`durable.store.runs.worker_beat`).

Each function runs one named statement of ``queries/registry.sql`` on the connection it is
given and returns typed rows (:mod:`durable.store.rows`).
"""

from __future__ import annotations

import json
from typing import Any

from .connections import Conn
from .rows import RegisteredWorkflow, WorkerInfo
from .statements import q


def _registered(row: Any) -> RegisteredWorkflow:
    return RegisteredWorkflow(name=row[0], version=row[1], queue=row[2], takes_input=row[3], input_schema=row[4],
                              result_schema=row[5], execution_timeout_s=row[6], registered_by=row[7],
                              updated_at=row[8])


async def registered(conn: Conn, names: list[str]) -> list[RegisteredWorkflow]:
    """The stored definitions of these workflows (absent: never registered)."""
    cur = await conn.execute(q("registered_workflows"), (names,))
    return [_registered(r) for r in await cur.fetchall()]


async def register(conn: Conn, workflows: list[RegisteredWorkflow], owner: str) -> None:
    """Write these definitions (insert or replace by name), as registered by ``owner``."""
    rows = [{"name": w.name, "version": w.version, "queue": w.queue, "takes_input": w.takes_input,
             "input_schema": w.input_schema, "result_schema": w.result_schema,
             "execution_timeout_s": w.execution_timeout_s} for w in workflows]
    await conn.execute(q("register_workflows"), {"rows": json.dumps(rows), "owner": owner})


async def lookup(conn: Conn, name: str) -> RegisteredWorkflow | None:
    row = await (await conn.execute(q("registered_workflow"), (name,))).fetchone()
    return None if row is None else _registered(row)


async def names(conn: Conn) -> list[str]:
    """Every registered workflow name."""
    return [r[0] for r in await (await conn.execute(q("registered_names"))).fetchall()]


async def workers(conn: Conn) -> list[WorkerInfo]:
    """Every process row, live ones first."""
    cur = await conn.execute(q("list_workers"))
    return [WorkerInfo(owner=r[0], host=r[1], pid=r[2], queues=list(r[3]), workflows=list(r[4]), concurrency=r[5],
                       started_at=r[6], last_seen=r[7], expires_at=r[8], alive=bool(r[9]))
            for r in await cur.fetchall()]


async def live_workers_serving(conn: Conn, queue: str, workflow_key: str) -> int:
    """How many live processes serve ``queue`` and the workflow version ``name:version``."""
    row = await (await conn.execute(q("live_workers_serving"), {"queue": queue, "workflow": workflow_key})).fetchone()
    return int(row[0]) if row else 0


async def all_registered(conn: Conn) -> list[RegisteredWorkflow]:
    """Every registered workflow, by name."""
    return [_registered(r) for r in await (await conn.execute(q("registered_all"))).fetchall()]
