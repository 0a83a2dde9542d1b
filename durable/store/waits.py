"""Fan-in and cross-run waits: the outcomes a waiting run reads when it is woken."""

from __future__ import annotations

import uuid

from .connections import Conn
from .rows import ChildOutcome, ChildOutcomes, RunOutcome, RunTarget, TakenChildId
from .statements import q


async def unread_children(conn: Conn, parent: uuid.UUID, read: list[uuid.UUID]) -> ChildOutcomes:
    """The parent's children whose outcome it has not read, first finished first; clears
    the unread flags of ``read`` (outcomes it has journaled since its last look)."""
    row = await (await conn.execute(q("finished_children"), {"parent": parent, "read": read})).fetchone()
    assert row is not None
    children = [ChildOutcome(chain_root_id=uuid.UUID(r["chain_root_id"]), id=uuid.UUID(r["id"]), status=r["status"],
                             result=r["result"], error=r["error"], workflow=r["workflow"],
                             finished_at=r.get("finished_at")) for r in row[1] or ()]
    return ChildOutcomes(cleared=int(row[0]), children=children, db_now=float(row[2]))


async def run_outcomes(conn: Conn, targets: list[uuid.UUID]) -> list[RunOutcome]:
    """The terminal states of the chains ``targets`` that have ended (or were deleted)."""
    cur = await conn.execute(q("run_outcomes"), (targets,))
    return [RunOutcome(target=r[0], id=r[1], status=r[2], result=r[3], error=r[4], workflow=r[5] or "",
                       finished_at=r[6], db_now=float(r[7])) for r in await cur.fetchall()]


async def register_wait(conn: Conn, target_chain: uuid.UUID, waiter: uuid.UUID) -> None:
    """``waiter`` waits on the chain ``target_chain``: any link's terminal wakes it."""
    await conn.execute(q("register_wait"), (target_chain, waiter))


async def run_target(conn: Conn, run_id: uuid.UUID) -> RunTarget | None:
    row = await (await conn.execute(q("run_exists"), (run_id,))).fetchone()
    return None if row is None else RunTarget(workflow=row[0], chain_root_id=row[1])


async def taken_child_id(conn: Conn, ids: list[uuid.UUID], parent: uuid.UUID) -> TakenChildId | None:
    """One of ``ids`` held by a run that is not a child of ``parent`` (a start that failed)."""
    row = await (await conn.execute(q("taken_child_ids"), (ids, parent))).fetchone()
    return None if row is None else TakenChildId(id=row[0], workflow=row[1], parent_id=row[2])
