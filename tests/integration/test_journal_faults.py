"""Faults on the journal's write path: the terminal write dying with its connection must not
lose the buffered step outcome it carried (nor leave a gap in the seqs), and a lease
give-back whose first event had already committed writes only the rest. Real PostgreSQL."""
from __future__ import annotations

import asyncio

import durable
from durable.store import events as store_events
from durable.store import runs as store_runs
from durable.store.rows import Pending

from helpers import eventually, execute, new_engine, rows, status_of, tree_key

CALLS: dict[str, int] = {}


@durable.step
async def count(tag: str) -> str:
    CALLS[tag] = CALLS.get(tag, 0) + 1
    return tag


@durable.workflow("jfault.two_steps", version=1)
async def two_steps(ctx: durable.Context, tag: str) -> list[str]:
    return [await ctx.step(count, tag + ".a"), await ctx.step(count, tag + ".b")]


GATES: dict[str, asyncio.Event] = {}


@durable.step
async def gated_count(tag: str) -> str:
    """``count``, after the test opens the tag's gate (when it has one)."""
    if tag in GATES:
        await GATES[tag].wait()
    return await count(tag)


@durable.workflow("jfault.two_steps_gated", version=1)
async def two_steps_gated(ctx: durable.Context, tag: str) -> list[str]:
    return [await ctx.step(count, tag + ".a"), await ctx.step(gated_count, tag + ".b")]


async def test_terminal_write_killed_keeps_the_last_step_and_the_seqs_contiguous(db):
    """The last step's outcome travels with the terminal state in one statement. Its backend
    is terminated mid-statement: the outcome is journaled when the lease is given back, the
    run completes on its resume, each step ran once, and the journal's seqs are 1..n. The
    terminal statement is held mid-way by a lock on the run's claim-queue row, which only
    the terminal write takes while the run executes (on Citus too: its worker waits, the
    coordinator's backend, which the engine talks to, is the one terminated)."""
    gate = GATES.setdefault("t1.b", asyncio.Event())
    async with new_engine(db) as engine:
        h = await engine.start(two_steps_gated, "t1")
        await eventually(lambda: CALLS.get("t1.a") == 1, 10, what="the first step")
        locker = await db.conn(autocommit=False)
        await locker.execute("SELECT 1 FROM durable_due WHERE tree_key = %s AND run_id = %s FOR UPDATE",
                             (tree_key(h.run_id), h.run_id))
        gate.set()

        async def blocked_backend():
            got = await rows(db, "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                                 "AND now() - query_start > interval '200 milliseconds' AND pid <> pg_backend_pid()",
                             "%durable_finish%")
            return got[0][0] if got else None
        pid = await eventually(blocked_backend, 15, what="the terminal write to wait for the lock")
        await rows(db, "SELECT pg_terminate_backend(%s::int)", pid)
        await locker.rollback()

        assert await h.result(timeout=20) == ["t1.a", "t1.b"]
    assert CALLS == {"t1.a": 1, "t1.b": 1}, f"a step ran again after its outcome was lost: {CALLS}"
    seqs = [r[0] for r in await rows(db, "SELECT seq FROM durable_events WHERE tree_key = %s AND run_id = %s "
                                         "ORDER BY seq", tree_key(h.run_id), h.run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), f"journal gap: {seqs}"


async def test_give_back_after_a_lost_answer_writes_only_the_rest(db):
    """A give-back whose first event had committed before its answer was lost (a server
    restart between commit and reply) writes the remaining events and releases the lease,
    instead of retrying the duplicate until the lease expires."""
    async with new_engine(db, execute=False) as engine:
        h = await engine.start(two_steps, "t2")
        conn = await db.conn()
        (claim,) = await store_runs.claim(conn, [(tree_key(h.run_id), h.run_id)], workflows=["jfault.two_steps:1"],
                                          owner="test", grace=0.0)
        first = Pending(None, "note", "first", '"one"')
        second = Pending(None, "note", "second", '"two"')
        # the first of the two already committed (its answer was lost with the connection)
        assert await store_events.append_event(conn, claim.tree_key, h.run_id, claim.lease_epoch, 1, None, "note",
                                               "first", '"one"')
        await asyncio.wait_for(engine.runs._release_soon(claim.tree_key, h.run_id, claim.lease_epoch,
                                                         [first, second], 1), 4)
        got = await rows(db, "SELECT seq, name FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)
        assert got == [(1, "first"), (2, "second")]
        assert await status_of(db, h.run_id) == "suspended"
        assert (await rows(db, "SELECT lease_owner FROM durable_runs WHERE id = %s", h.run_id))[0][0] is None
