"""Runs: start, claim, suspend, release, finish, renew leases, read states.

Each function runs one named statement of ``queries.sql`` on the connection it is given
and returns typed rows (:mod:`durable.store.rows`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg.rows import dict_row

from .connections import Conn
from .rows import ChainState, Claim, DueIn, Event, ExistingRun, RunInfo, Started, Suspended
from .statements import q


async def start_run(conn: Conn, *, id: uuid.UUID, workflow: str, version: int, queue: str, leased: bool,
                    input: str, key: str | None, timeout: float | None, owner: str, ttl: float,
                    start_at: Any) -> Started | None:
    """Insert a top-level run (already leased to ``owner`` when ``leased``); None when the
    id is taken (then :func:`find_run_for_start` says by what)."""
    cur = await conn.execute(q("start_run"), {
        "id": id, "workflow": workflow, "version": version, "queue": queue, "leased": leased, "input": input,
        "key": key, "timeout": timeout, "owner": owner, "ttl": ttl, "start_at": start_at})
    row = await cur.fetchone()
    if row is None:
        return None
    return Started(id=row[0], status=row[1], lease_token=row[2], due_in_s=row[4])


async def find_run_for_start(conn: Conn, *, id: uuid.UUID, key: str | None, workflow: str) -> ExistingRun | None:
    row = await (await conn.execute(q("find_run_for_start"), {"id": id, "key": key, "workflow": workflow})).fetchone()
    return None if row is None else ExistingRun(id=row[0], workflow=row[1], input=row[2])


def _claim(row: dict[str, Any]) -> Claim:
    return Claim(id=row["id"], root_id=row["root_id"], parent_id=row["parent_id"], chain_root_id=row["chain_root_id"],
                 workflow=row["workflow"], version=row["version"], queue=row["queue"], input=row["input"],
                 attempt=row["attempt"] or 1, depth=row["depth"] or 0, lease_token=row["lease_token"],
                 cancel_requested=bool(row["cancel_requested"]), prev_status=row["prev_status"],
                 wake_latency_s=row["wake_latency_s"], last_seq=row["last_seq"] or 0,
                 deadline_in_s=row["deadline_in_s"])


async def claim_due(conn: Conn, *, queues: list[str], workflows: list[str], owner: str, grace: float, ttl: float,
                    limit: int) -> list[Claim]:
    """Claim up to ``limit`` due runs of ``queues`` (and runs whose lease expired)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("claim_due"), {"queues": queues, "workflows": workflows, "owner": owner, "grace": grace,
                                       "ttl": ttl, "limit": limit, "scan": limit * 4 + 16})
    return [_claim(r) for r in await cur.fetchall()]


async def claim_one(conn: Conn, *, id: uuid.UUID, workflows: list[str], owner: str, ttl: float) -> Claim | None:
    """Claim one known run if it is due (woken by a notification or a local timer)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("claim_one"), {"id": id, "workflows": workflows, "owner": owner, "ttl": ttl})
    row = await cur.fetchone()
    return None if row is None else _claim(row)


async def due_in(conn: Conn, run_id: uuid.UUID) -> DueIn | None:
    row = await (await conn.execute(q("run_due_in"), (run_id,))).fetchone()
    return None if row is None else DueIn(status=row[0], due_in_s=row[1])


async def load_history(conn: Conn, run_id: uuid.UUID) -> list[Event]:
    cur = await conn.execute(q("load_history"), (run_id,))
    return [Event(seq=r[0], pos=r[1], kind=r[3], name=r[4], data=r[5] or {}, op=r[2]) for r in await cur.fetchall()]


async def suspend(conn: Conn, run_id: uuid.UUID, token: int, fire_at: float | None) -> Suspended | None:
    """Release the lease of a run that waits (None: the lease was lost)."""
    row = await (await conn.execute(q("suspend"), (fire_at, run_id, token))).fetchone()
    return None if row is None else Suspended(due_now=bool(row[0]), db_now=float(row[1]))


async def release(conn: Conn, run_id: uuid.UUID, token: int) -> bool:
    """Give a run back now (it is due at once, for any process)."""
    cur = await conn.execute(q("release"), {"id": run_id, "token": token})
    return cur.rowcount == 1


async def finish(conn: Conn, run_id: uuid.UUID, token: int, status: str, result: str | None, error: str | None,
                 max_depth: int) -> str:
    """The terminal transaction: 'finished', 'retried' (a new attempt replaces the run) or
    'lost' (lease lost: nothing written)."""
    row = await (await conn.execute(q("finish_run_outcome"), (run_id, token, status, result, error,
                                                               max_depth))).fetchone()
    return row[0] if row else "lost"


async def finish_with_event(conn: Conn, run_id: uuid.UUID, token: int, *, seq: int, pos: int | None,
                            op: str | None, kind: str, name: str | None, data: str, status: str,
                            result: str | None, error: str | None, max_depth: int) -> str:
    """The last buffered event and the terminal state in one transaction (as :func:`finish`)."""
    row = await (await conn.execute(q("finish_with_event"), {
        "seq": seq, "pos": pos, "op": op, "kind": kind, "name": name, "data": data, "id": run_id, "token": token,
        "status": status, "result": result, "error": error, "depth": max_depth})).fetchone()
    return row[0] if row else "lost"


async def renew_leases(conn: Conn, held: list[tuple[uuid.UUID, int]], ttl: float) -> dict[uuid.UUID, bool]:
    """Renew every lease held here in one statement. A run missing from the answer lost its
    lease; one mapped to False was locked by another transaction (still valid: retry soon)."""
    cur = await conn.execute(q("heartbeat"), {"ttl": ttl, "ids": [h[0] for h in held],
                                              "tokens": [h[1] for h in held]})
    return {r[0]: r[1] for r in await cur.fetchall()}


async def finished_among(conn: Conn, run_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these runs have ended (cancelled, expired, finished elsewhere)."""
    return [r[0] for r in await (await conn.execute(q("finished_among"), (run_ids,))).fetchall()]


async def clear_sticky_hints(conn: Conn, owner: str) -> None:
    await conn.execute(q("clear_sticky_hints"), (owner,))


async def chain_state(conn: Conn, run_id: uuid.UUID) -> ChainState | None:
    """The newest link of the continue-as-new chain holding ``run_id``."""
    row = await (await conn.execute(q("run_chain_state"), (run_id,))).fetchone()
    if row is None:
        return None
    return ChainState(id=row[0], status=row[1], result=row[2], error=row[3], workflow=row[4])


async def watch(conn: Conn, run_id: uuid.UUID) -> None:
    """Ask the terminal transaction of the chain holding ``run_id`` to notify 'done|<run>'."""
    await conn.execute(q("watch_run"), (run_id,))


async def info(conn: Conn, run_id: uuid.UUID) -> RunInfo | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("run_info"), (run_id,))
    row = await cur.fetchone()
    return None if row is None else RunInfo(**row)


def as_json(value: Any) -> str | None:
    """A decoded JSON value as text for a jsonb parameter (None stays SQL NULL)."""
    return None if value is None else json.dumps(value)
