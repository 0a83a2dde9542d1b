"""Crashes and races against real PostgreSQL, in-process: claims racing for one run,
fenced writes of a lease loser, compare-and-set on finish, an error while recording the
outcome, a buffered step outcome journaled at shutdown. (SIGKILL between steps and two
worker processes racing: tests/procs/test_core_crash_procs.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import durable
from durable.store import events as store_events
from durable.store import runs as store_runs
from durable.store.rows import Pending, tree_key_of
from wf_core import MarkJob, marks_flow
from helpers import events, eventually


# --- claims racing for one run -----------------------------------------------------------------


async def _pending_run(db) -> uuid.UUID:
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        h = await client.start(marks_flow, MarkJob(path="/dev/null", n=1))
    return h.run_id


async def _alive(conn, owner: str, ttl: float = 30.0) -> None:
    """``owner`` is a live process (its lease on what it holds lasts ``ttl`` seconds)."""
    await store_runs.worker_beat(conn, owner=owner, host="test", pid=0, queues=["default"], workflows=[],
                                 concurrency=1, ttl=ttl)


async def _dead(conn, owner: str) -> None:
    """``owner`` stopped heartbeating: its leases have expired."""
    await conn.execute("UPDATE durable_workers SET expires_at = now() - interval '1 s' WHERE owner = %s", (owner,))


async def _claim(conn, owner: str, run_id: uuid.UUID, wf: str = "core.marks:1"):
    got = await store_runs.claim(conn, [(tree_key_of(run_id), run_id)], workflows=[wf], owner=owner, grace=0.0)
    return got[0] if got else None


async def _claimable(conn, owner: str, wf: str = "core.marks:1") -> list:
    return await store_runs.claimable(conn, queues=["default"], workflows=[wf], owner=owner, grace=0.0, limit=10)


async def test_runs_held_by_a_process_gone_for_a_week_are_taken_over(db):
    """Claims look back a week for dead processes; one gone longer is forgotten by the next
    process that starts, and the runs it still held become claimable (not stranded)."""
    run_id = await _pending_run(db)
    conn = await db.conn()
    await _alive(conn, "old")
    assert await _claim(conn, "old", run_id) is not None
    await conn.execute("UPDATE durable_workers SET expires_at = now() - interval '8 days' WHERE owner = 'old'")
    assert await _claimable(conn, "new") == []  # too long dead for the claim's look back
    await _alive(conn, "new")  # a process starts: its first beat
    assert [r for _, r in await _claimable(conn, "new")] == [run_id]
    assert (await _claim(conn, "new", run_id)) is not None
    assert await events(conn, run_id) == []
    (gone,), = await (await conn.execute("SELECT count(*) FROM durable_workers WHERE owner = 'old'")).fetchall()
    assert gone == 0


async def test_concurrent_claims_one_winner(db):
    conns = [await db.conn() for _ in range(2)]
    for i in range(2):
        await _alive(conns[0], f"p{i}")
    for _ in range(5):
        run_id = await _pending_run(db)
        got = await asyncio.gather(*(_claim(c, f"p{i}", run_id) for i, c in enumerate(conns)))
        assert sorted(g is not None for g in got) == [False, True]
        # no other claimer sees it while its holder is alive
        assert await _claimable(conns[0], "p9") == []
        assert await _claim(conns[0], "p9", run_id) is None


async def test_lease_loser_writes_are_fenced(db):
    run_id = await _pending_run(db)
    key = tree_key_of(run_id)
    ca, cb = await db.conn(), await db.conn()
    await _alive(ca, "A")
    await _alive(ca, "B")
    ta = (await _claim(ca, "A", run_id)).lease_epoch
    assert await store_events.append_event(ca, key, run_id, ta, 1, 0, "step_completed", "core.mark",
                                           '{"attempt":1,"result":0}')
    # A stalls past its lease; B's claim of the expired lease is still uncommitted when
    # A tries to write: A's fenced insert waits for B's row lock, then sees the new epoch
    # and writes nothing.
    await _dead(ca, "A")
    cb_tx = await db.conn(autocommit=False)
    assert await _claimable(cb_tx, "B") == [(key, run_id)]
    claimed = await _claim(cb_tx, "B", run_id)
    assert claimed is not None and claimed.prev_status == "running" and claimed.last_seq == 1
    tb = claimed.lease_epoch
    assert tb > ta
    a_write = asyncio.ensure_future(store_events.append_event(ca, key, run_id, ta, 2, 1, "step_completed",
                                                              "core.mark", '{"attempt":1,"result":10}'))
    await asyncio.sleep(0.3)
    assert not a_write.done()  # blocked on B's claim
    await cb_tx.commit()
    assert await a_write is False  # nothing written: A lost the lease

    # every other write of A is fenced too
    stale = [Pending(1, "step_completed", "core.mark", "{}")]
    assert await store_events.append_pending(ca, key, run_id, ta, 2, stale) is False
    assert await store_events.append_timer_event(ca, key, run_id, ta, seq=2, pos=1, op=None, kind="step_retry",
                                                 name="core.mark", data={}, delay=1.0) is None
    assert await store_runs.suspend(ca, key, run_id, ta, None) is None
    assert run_id not in await store_runs.held_leases(ca, "A")
    assert await store_runs.finish(ca, key, run_id, ta, "failed", None, '{"type":"X"}', 10) == "lost"
    assert await store_events.start_children(ca, key, run_id, ta, []) is False
    assert await store_runs.release(ca, key, run_id, ta) is False

    # B goes on; the run is B's
    assert await store_events.append_event(cb, key, run_id, tb, 2, 1, "step_completed", "core.mark",
                                           '{"attempt":1,"result":10}')
    evs = await events(cb, run_id)
    assert [(e[0], e[4]["result"]) for e in evs] == [(1, 0), (2, 10)]
    cur = await cb.execute("SELECT status, lease_owner, lease_epoch FROM durable_runs WHERE id = %s", (run_id,))
    assert await cur.fetchone() == ("running", "B", tb)
    assert await store_runs.held_leases(cb, "B") == {run_id: key}


_gate: dict[str, asyncio.Event] = {}  # the event is made inside the test's event loop


@durable.step("core.crash.wait_gate")
async def _wait_gate() -> int:
    await _gate["ev"].wait()
    return 1


@durable.workflow("core.crash.gated")
async def gated_flow(ctx: durable.Context) -> int:
    return await ctx.step(_wait_gate) + await ctx.step(_wait_gate)


async def test_engine_that_lost_its_lease_stops_and_appends_nothing(db):
    _gate["ev"] = asyncio.Event()
    seen: list[tuple[str, dict]] = []
    detach = durable.hooks.on("*", lambda ev: seen.append((ev.name, dict(ev.fields))))
    try:
        async with durable.Engine(db.dsn, schema=db.schema, lease_ttl_s=30) as a:
            h = await a.start(gated_flow)
            conn = await db.conn(autocommit=False)
            await eventually(lambda: _in_step(a, h.run_id), what="the step to start")
            # another process takes the run over after (simulated) lease expiry: A's lease
            # row looks expired, in the same transaction as B's claim
            await _alive(conn, "B")
            await _dead(conn, a.owner)
            claimed = await _claim(conn, "B", h.run_id, "core.crash.gated:1")
            await conn.commit()
            assert claimed is not None
            _gate["ev"].set()  # A's step finishes; its journal write must be fenced
            await eventually(lambda: _ended(seen, h.run_id), what="A's execution to end")
            assert ("lease.lost", {"run_id": h.run_id, "workflow": "core.crash.gated"}) in seen
            assert _ended(seen, h.run_id) == "lease_lost"
            assert not any(n == "step.completed" and f["run_id"] == h.run_id for n, f in seen)
            assert await events(conn, h.run_id) == []
            info = await h.info()
            assert (info.status, info.lease_owner, info.lease_epoch) == ("running", "B", claimed.lease_epoch)
            assert h.run_id not in a.runs.active
    finally:
        detach()


def _in_step(engine, run_id):
    ex = engine.runs.active.get(run_id)
    return ex is not None and ex.busy > 0


def _ended(seen, run_id):
    return next((f["reason"] for n, f in seen if n == "execution.ended" and f["run_id"] == run_id), None)


# --- compare-and-set on the terminal transition -------------------------------------------


async def test_late_failure_never_overwrites_a_completion(db):
    run_id = await _pending_run(db)
    key = tree_key_of(run_id)
    conn = await db.conn()
    await _alive(conn, "A")
    await _alive(conn, "B")
    ta = (await _claim(conn, "A", run_id)).lease_epoch
    await _dead(conn, "A")
    tb = (await _claim(conn, "B", run_id)).lease_epoch

    async def finish(token: int, status: str, result: str | None, error: str | None) -> str:
        return await store_runs.finish(conn, key, run_id, token, status, result, error, 10)

    assert await finish(tb, "completed", "[0]", None) == "finished"
    # the stale executor A, and B itself retrying, both try to fail the completed run
    for token in (ta, tb):
        assert await finish(token, "failed", None, '{"type":"Late"}') == "lost"
        assert await finish(token, "completed", "[1]", None) == "lost"
    cur = await conn.execute("SELECT status, result, error FROM durable_runs WHERE id = %s", (run_id,))
    assert await cur.fetchone() == ("completed", [0], None)
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        assert await client.get_handle(run_id).result(timeout=5) == [0]


# --- an unexpected error while recording the outcome ---------------------------------------

_broken_calls: Counter = Counter()


@durable.step("core.broken.work")
async def _broken_work(tag: str) -> str:
    _broken_calls[tag] += 1
    return f"done {tag}"


@durable.workflow("core.broken")
async def broken_flow(ctx: durable.Context, tag: str) -> str:
    return await ctx.step(_broken_work, tag)


async def test_error_recording_the_outcome_leaves_the_run_to_resume(db):
    """The terminal write fails with a non-database error (here: its function is missing):
    the run is not failed, the execution ends with reason 'error', and once the function is
    back the run completes after its lease expires."""
    seen: list[tuple[str, dict]] = []
    detach = durable.hooks.on("execution.ended", lambda ev: seen.append((ev.name, dict(ev.fields))))
    admin = await db.conn()
    await admin.execute("ALTER FUNCTION durable_finish_with_event(bigint, uuid, integer, integer, integer, text, text, "
                        "text, jsonb, text, jsonb, jsonb, integer) RENAME TO durable_finish_with_event_away")
    try:
        async with durable.Engine(db.dsn, schema=db.schema, lease_ttl_s=1.0, poll_interval_s=0.2) as e:
            h = await e.start(broken_flow, "x")
            await eventually(lambda: _ended(seen, h.run_id), what="the execution to end")
            assert _ended(seen, h.run_id) == "error"
            assert await h.status() == "running"  # not failed: it resumes from its journal
            await admin.execute("ALTER FUNCTION durable_finish_with_event_away(bigint, uuid, integer, integer, "
                                "integer, text, text, text, jsonb, text, jsonb, jsonb, integer) "
                                "RENAME TO durable_finish_with_event")
            assert await h.result(timeout=20) == "done x"
        assert _broken_calls["x"] == 2  # its outcome was never journaled, so the step ran again
    finally:
        detach()


_shutdown_gate: dict[str, asyncio.Event] = {}
_shutdown_calls: Counter = Counter()


@durable.step("core.shutdown.first")
async def _first(tag: str) -> int:
    _shutdown_calls[tag] += 1
    return 1


@durable.workflow("core.shutdown")
async def shutdown_flow(ctx: durable.Context, tag: str) -> int:
    n = await ctx.step(_first, tag)
    await _shutdown_gate[tag].wait()  # not durable: the step's outcome is still buffered here
    return n + await ctx.step(_first, tag + "-second")


async def test_shutdown_journals_a_buffered_step_outcome_before_giving_the_lease_back(db):
    _shutdown_gate["s"] = asyncio.Event()
    e1 = durable.Engine(db.dsn, schema=db.schema)
    await e1.open()
    h = await e1.start(shutdown_flow, "s")
    await eventually(lambda: _shutdown_calls["s"] == 1, what="the first step to run")
    closing = asyncio.create_task(e1.close(grace=10))
    await eventually(lambda: e1.closing, what="the engine to start closing")
    _shutdown_gate["s"].set()  # the run reaches its next durable point while closing: it stops there
    await closing
    conn = await db.conn()
    assert [e[2] for e in await events(conn, h.run_id)] == ["step_completed"]
    async with durable.Engine(db.dsn, schema=db.schema) as e2:
        assert await e2.get_handle(h.run_id).result(timeout=20) == 2
    assert _shutdown_calls["s"] == 1  # not run again after the hand-over


async def test_a_run_stops_at_its_durable_point_while_the_engine_stops_its_loops(db):
    """close() stops its background loops (a claim in flight can take a while, on Citus
    always) before it waits for the executions: a run reaching a durable point meanwhile
    must already stop there, not go on to its next step."""
    _shutdown_gate["slow"] = asyncio.Event()
    e1 = durable.Engine(db.dsn, schema=db.schema)
    await e1.open()
    assert e1.claimer is not None
    claimer_stop = e1.claimer.stop
    stopping_loops = asyncio.Event()

    async def slow_stop() -> None:  # the claimer's stop waits for a claim statement in flight
        stopping_loops.set()
        await asyncio.sleep(1.0)
        await claimer_stop()

    e1.claimer.stop = slow_stop  # type: ignore[method-assign]
    h = await e1.start(shutdown_flow, "slow")
    await eventually(lambda: _shutdown_calls["slow"] == 1, what="the first step to run")
    closing = asyncio.create_task(e1.close(grace=10))
    await stopping_loops.wait()
    _shutdown_gate["slow"].set()  # the durable point comes while the loops are still stopping
    await closing
    conn = await db.conn()
    assert [e[2] for e in await events(conn, h.run_id)] == ["step_completed"]
    assert _shutdown_calls["slow-second"] == 0
    async with durable.Engine(db.dsn, schema=db.schema) as e2:
        assert await e2.get_handle(h.run_id).result(timeout=20) == 2
