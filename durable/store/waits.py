"""Fan-in and cross-run waits: the outcomes a waiting run reads when it is woken."""

from __future__ import annotations

import uuid

from .connections import Conn
from .runs import key_of
from .rows import ChildOutcome, ChildOutcomes, RunOutcome, RunTarget, TakenChildId
from .statements import q


async def unread_children(conn: Conn, tree_key: int, parent: uuid.UUID, after: int) -> ChildOutcomes:
    """The parent's child outcomes added after ``after`` (the ``seq`` of the last outcome
    it journaled), in the order they were added: never one numbered below those returned
    is missing (see durable_read_outcomes)."""
    cur = await conn.execute(q("finished_children"), {"key": tree_key, "parent": parent, "after": after})
    rows = await cur.fetchall()
    children = [ChildOutcome(chain_root_id=r[0], id=r[1], status=r[2], result=r[3], error=r[4], workflow=r[5],
                             finished_at=r[6], seq=r[7]) for r in rows]
    return ChildOutcomes(children=children, db_now=float(rows[0][8]) if rows else 0.0)


async def run_outcomes(conn: Conn, targets: list[uuid.UUID]) -> list[RunOutcome]:
    """The terminal states of the chains ``targets`` that have ended (or were deleted)."""
    cur = await conn.execute(q("run_outcomes"), (targets,))
    return [RunOutcome(target=r[0], id=r[1], status=r[2], result=r[3], error=r[4], workflow=r[5] or "",
                       finished_at=r[6], db_now=float(r[7])) for r in await cur.fetchall()]


async def register_wait(conn: Conn, target_chain: uuid.UUID, target_key: int, waiter: uuid.UUID,
                        waiter_key: int) -> None:
    """``waiter`` waits on the chain ``target_chain``: any link's terminal wakes it."""
    await conn.execute(q("register_wait"), {"target": target_chain, "target_key": target_key, "waiter": waiter,
                                            "waiter_key": waiter_key})


async def run_target(conn: Conn, run_id: uuid.UUID) -> RunTarget | None:
    """A run another run will wait on: its workflow, chain and tree (None: no such run)."""
    key = await key_of(conn, run_id)
    row = await (await conn.execute(q("run_exists"), {"key": key, "id": run_id})).fetchone()
    return None if row is None else RunTarget(workflow=row[0], chain_root_id=row[1], tree_key=key)


async def taken_child_id(conn: Conn, tree_key: int, ids: list[uuid.UUID], parent: uuid.UUID) -> TakenChildId | None:
    """One of ``ids`` held by a run that is not a child of ``parent`` (a start that failed)."""
    row = await (await conn.execute(q("taken_child_ids"), {"key": tree_key, "ids": ids, "parent": parent})).fetchone()
    return None if row is None else TakenChildId(id=row[0], workflow=row[1], parent_id=row[2])
