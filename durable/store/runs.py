"""Runs: start, claim, suspend, release, finish, renew leases, read states.

Each function runs one named statement of ``queries/runs.sql`` on the connection it is given
and returns typed rows (:mod:`durable.store.rows`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

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
    return Started(id=row[0], status=row[1], lease_epoch=row[2], due_in_s=row[3])


async def key_of(conn: Conn, run_id: uuid.UUID) -> int:
    """The tree of a run id: its prefix, or, for a run made before schema version 7, the map."""
    row = await (await conn.execute(q("key_of"), (run_id,))).fetchone()
    assert row is not None
    return int(row[0])


async def find_run_for_start(conn: Conn, *, id: uuid.UUID, key: str | None, workflow: str) -> ExistingRun | None:
    tree = await key_of(conn, id)
    row = await (await conn.execute(q("find_run_for_start"), {"tree": tree, "id": id, "key": key,
                                                              "workflow": workflow})).fetchone()
    return None if row is None else ExistingRun(id=row[0], workflow=row[1], input=row[2])


def _claim(row: dict[str, Any]) -> Claim:
    return Claim(tree_key=row["tree_key"], id=row["id"], root_id=row["root_id"], parent_id=row["parent_id"],
                 chain_root_id=row["chain_root_id"], workflow=row["workflow"], version=row["version"],
                 queue=row["queue"], input=row["input"], attempt=row["attempt"] or 1, depth=row["depth"] or 0,
                 lease_epoch=row["lease_epoch"], cancel_requested=bool(row["cancel_requested"]),
                 grafted=bool(row["grafted"]), prev_status=row["prev_status"], wake_latency_s=row["wake_latency_s"],
                 last_seq=row["last_seq"] or 0, deadline_in_s=row["deadline_in_s"])


async def claimable(conn: Conn, *, queues: list[str], workflows: list[str], owner: str, grace: float,
                    limit: int) -> list[tuple[int, uuid.UUID]]:
    """(tree key, run id) of runs this process may claim now: due waiting runs per queue,
    then runs whose holder's lease expired (a lock-free read; :func:`claim` takes them)."""
    cur = await conn.execute(q("claimable"), {"queues": queues, "workflows": workflows, "owner": owner,
                                              "grace": grace, "limit": limit})
    return [(r[0], r[1]) for r in await cur.fetchall()]


_CLAIM_UUIDS = ("id", "root_id", "parent_id", "chain_root_id")


async def claim(conn: Conn, runs: list[tuple[int, uuid.UUID]], *, workflows: list[str], owner: str,
                grace: float, limit: int | None = None, per_run: bool = False) -> list[Claim]:
    """Claim for ``owner`` up to ``limit`` (default: all) of these runs where they are still
    claimable, in order (each one routed to its tree; a row another transaction holds is
    skipped and the next one taken instead). One transaction for all, or with ``per_run``
    one per run (on Citus, where a transaction writing to several shards commits in two
    phases, and one interrupted in between holds its rows until Citus recovers it)."""
    if not runs:
        return []
    params = {"keys": [r[0] for r in runs], "ids": [r[1] for r in runs], "owner": owner, "workflows": workflows,
              "grace": grace, "limit": len(runs) if limit is None else limit}
    if per_run:
        row = await (await conn.execute(q("claim_each"), params)).fetchone()
        docs: list[dict[str, Any]] = row[0] if row and row[0] else []
        for d in docs:
            for k in _CLAIM_UUIDS:
                if d.get(k) is not None:
                    d[k] = uuid.UUID(d[k])
        return [_claim(d) for d in docs]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("claim"), params)
    return [_claim(r) for r in await cur.fetchall()]


async def due_in(conn: Conn, tree_key: int, run_id: uuid.UUID) -> DueIn | None:
    row = await (await conn.execute(q("run_due_in"), (tree_key, run_id))).fetchone()
    return None if row is None else DueIn(status=row[0], due_in_s=row[1])


async def load_history(conn: Conn, tree_key: int, run_id: uuid.UUID) -> list[Event]:
    cur = await conn.execute(q("load_history"), (tree_key, run_id))
    return [Event(seq=r[0], pos=r[1], kind=r[3], name=r[4], data=r[5] or {}, op=r[2], size=r[6] or 0)
            for r in await cur.fetchall()]


async def suspend(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, fire_at: float | None) -> Suspended | None:
    """Release the lease of a run that waits (None: the lease was lost)."""
    row = await (await conn.execute(q("suspend"), (tree_key, run_id, token, fire_at))).fetchone()
    return None if row is None else Suspended(due_now=bool(row[0]), db_now=float(row[1]))


async def release(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int) -> bool:
    """Give a run back now (it is due at once, for any process)."""
    row = await (await conn.execute(q("release"), (tree_key, run_id, token))).fetchone()
    return bool(row and row[0])


async def finish(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, status: str, result: str | None,
                 error: str | None, max_depth: int) -> str:
    """The terminal transaction: 'finished', 'retried' (a new attempt replaces the run) or
    'lost' (lease lost: nothing written)."""
    row = await (await conn.execute(q("finish_run_outcome"), (tree_key, run_id, token, status, result, error,
                                                               max_depth))).fetchone()
    return str(row[0]) if row else "lost"


async def finish_with_event(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, *, seq: int, pos: int | None,
                            op: str | None, kind: str, name: str | None, data: str, status: str,
                            result: str | None, error: str | None, max_depth: int) -> str:
    """The last buffered event and the terminal state in one transaction (as :func:`finish`)."""
    row = await (await conn.execute(q("finish_with_event"), {
        "key": tree_key, "seq": seq, "pos": pos, "op": op, "kind": kind, "name": name, "data": data, "id": run_id,
        "epoch": token, "status": status, "result": result, "error": error, "depth": max_depth})).fetchone()
    return str(row[0]) if row else "lost"


async def worker_beat(conn: Conn, *, owner: str, host: str, pid: int, queues: list[str], workflows: list[str],
                      concurrency: int, ttl: float) -> None:
    """This process is alive: its lease on every run it holds lasts ``ttl`` seconds more."""
    await conn.execute(q("worker_beat"), {"owner": owner, "host": host, "pid": pid, "queues": queues,
                                          "workflows": workflows, "concurrency": concurrency, "ttl": ttl})


async def worker_gone(conn: Conn, owner: str) -> None:
    """This process stops: its leases end now and its sticky hints no longer hold."""
    await conn.execute(q("worker_gone"), (owner,))


async def held_leases(conn: Conn, owner: str) -> dict[uuid.UUID, int]:
    """The runs ``owner`` holds the lease of, with their tree keys (one absent was
    cancelled or taken over)."""
    return {r[1]: r[0] for r in await (await conn.execute(q("held_leases"), (owner,))).fetchall()}


async def release_orphan(conn: Conn, tree_key: int, run_id: uuid.UUID, owner: str) -> bool:
    """Give back a run ``owner`` holds but does not execute (due at once for anyone)."""
    row = await (await conn.execute(q("release_orphan"), (tree_key, run_id, owner))).fetchone()
    return bool(row and row[0])


async def finished_among(conn: Conn, runs: list[tuple[int, uuid.UUID]]) -> dict[uuid.UUID, str]:
    """Which of these runs have ended (cancelled, expired, finished elsewhere), with their
    status (``'cancelled'``, ``'failed'``, ...)."""
    cur = await conn.execute(q("finished_among"), ([r[0] for r in runs], [r[1] for r in runs]))
    return {r[0]: r[1] for r in await cur.fetchall()}


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
    key = await key_of(conn, run_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("run_info"), {"key": key, "id": run_id})
    row = await cur.fetchone()
    if row is None:
        return None
    row["lease_expires_at"] = await lease_expiry(conn, row["lease_owner"]) if row["status"] == "running" else None
    return RunInfo(**row)


async def lease_expiry(conn: Conn, owner: str | None) -> datetime | None:
    """When the leases ``owner`` holds expire (None: no such process)."""
    if owner is None:
        return None
    row = await (await conn.execute(q("lease_expiry"), (owner,))).fetchone()
    return None if row is None else cast(datetime, row[0])

