"""Crashes and races against real PostgreSQL, in-process: claims racing for one run,
fenced writes of a lease loser, compare-and-set on finish, an error while recording the
outcome, a buffered step outcome journaled at shutdown. (SIGKILL between steps and two
worker processes racing: tests/procs/test_core_crash_procs.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import durable
from durable.store.statements import SQL
from wf_core import MarkJob, marks_flow
from helpers import events, eventually


# --- claims racing for one run -----------------------------------------------------------------


async def _pending_run(db) -> uuid.UUID:
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        h = await client.start(marks_flow, MarkJob(path="/dev/null", n=1))
    return h.run_id


def _claim_args(owner: str, ttl: float = 30.0) -> dict:
    return {"queues": ["default"], "workflows": ["core.marks:1"], "owner": owner, "grace": 0.0,
            "ttl": ttl, "limit": 10, "scan": 50}


async def test_concurrent_claims_one_winner(db):
    conns = [await db.conn() for _ in range(2)]
    for _ in range(5):
        run_id = await _pending_run(db)
        args = {"id": run_id, "workflows": ["core.marks:1"], "ttl": 30.0}
        got = await asyncio.gather(*(c.execute(SQL["claim_one"], {**args, "owner": f"p{i}"})
                                     for i, c in enumerate(conns)))
        rows = [await cur.fetchall() for cur in got]
        assert sorted(len(r) for r in rows) == [0, 1]
        # the batch claim does not see it either while the lease is live
        cur = await conns[0].execute(SQL["claim_due"], _claim_args("p9"))
        assert await cur.fetchall() == []


async def test_lease_loser_writes_are_fenced(db):
    run_id = await _pending_run(db)
    ca, cb = await db.conn(), await db.conn()
    cur = await ca.execute(SQL["claim_one"], {"id": run_id, "workflows": ["core.marks:1"], "owner": "A",
                                               "ttl": 30.0})
    ta = (await cur.fetchone())[10]
    assert (await ca.execute(SQL["append_event"], (1, 0, None, "step_completed", "core.mark",
                                                          '{"attempt":1,"result":0}', run_id, ta))).rowcount == 1
    # A stalls past its lease; B's claim of the expired lease is still uncommitted when
    # A tries to write: A's fenced insert waits for B's row lock, then sees the new token
    # and writes nothing.
    cb_tx = await db.conn(autocommit=False)
    await cb_tx.execute("UPDATE durable_runs SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
                        (run_id,))
    rows = await (await cb_tx.execute(SQL["claim_due"], _claim_args("B"))).fetchall()
    assert len(rows) == 1 and rows[0][12] == "running" and rows[0][14] == 1  # prev status, last seq
    tb = rows[0][10]
    assert tb > ta
    a_write = asyncio.ensure_future(ca.execute(SQL["append_event"], (2, 1, None, "step_completed", "core.mark",
                                                                      '{"attempt":1,"result":10}', run_id, ta)))
    await asyncio.sleep(0.3)
    assert not a_write.done()  # blocked on B's claim
    await cb_tx.commit()
    assert (await a_write).rowcount == 0  # zero rows: A lost the lease

    # every other write of A is fenced too
    cur = await ca.execute(SQL["append_events"], (run_id, ta, [2], [1], [None], ["step_completed"], ["core.mark"], ["{}"]))
    assert cur.rowcount == 0
    cur = await ca.execute(SQL["append_timer_event"], {"seq": 2, "pos": 1, "op": None, "kind": "step_retry", "name": "core.mark",
                                                        "data": "{}", "delay": 1.0, "id": run_id, "token": ta})
    assert await cur.fetchone() is None
    assert await (await ca.execute(SQL["suspend"], (None, run_id, ta))).fetchone() is None
    cur = await ca.execute(SQL["heartbeat"], {"ttl": 30.0, "ids": [run_id], "tokens": [ta]})
    assert await cur.fetchall() == []
    assert (await (await ca.execute(SQL["finish_run"], (run_id, ta, "failed", None, '{"type":"X"}', 10)))
            .fetchone())[0] is False
    cur = await ca.execute(SQL["start_children"], (run_id, ta, json.dumps([])))
    assert (await cur.fetchone())[0] is False
    await ca.execute(SQL["release"], {"id": run_id, "token": ta})

    # B goes on; the run is B's
    assert (await cb.execute(SQL["append_event"], (2, 1, None, "step_completed", "core.mark",
                                                          '{"attempt":1,"result":10}', run_id, tb))).rowcount == 1
    evs = await events(cb, run_id)
    assert [(e[0], e[4]["result"]) for e in evs] == [(1, 0), (2, 10)]
    cur = await cb.execute("SELECT status, lease_owner, lease_token FROM durable_runs WHERE id = %s", (run_id,))
    assert await cur.fetchone() == ("running", "B", tb)


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
            # another process takes the run over after (simulated) lease expiry
            await conn.execute("UPDATE durable_runs SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
                               (h.run_id,))
            rows = await (await conn.execute(SQL["claim_due"], {
                **_claim_args("B"), "workflows": ["core.crash.gated:1"]})).fetchall()
            await conn.commit()
            assert len(rows) == 1
            _gate["ev"].set()  # A's step finishes; its journal write must be fenced
            await eventually(lambda: _ended(seen, h.run_id), what="A's execution to end")
            assert ("lease.lost", {"run_id": h.run_id, "workflow": "core.crash.gated"}) in seen
            assert _ended(seen, h.run_id) == "lease_lost"
            assert not any(n == "step.completed" and f["run_id"] == h.run_id for n, f in seen)
            assert await events(conn, h.run_id) == []
            info = await h.info()
            assert (info.status, info.lease_owner, info.lease_token) == ("running", "B", rows[0][10])
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
    conn = await db.conn()
    cur = await conn.execute(SQL["claim_one"], {"id": run_id, "workflows": ["core.marks:1"], "owner": "A",
                                                 "ttl": 30.0})
    ta = (await cur.fetchone())[10]
    await conn.execute("UPDATE durable_runs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (run_id,))
    tb = (await (await conn.execute(SQL["claim_due"], _claim_args("B"))).fetchone())[10]
    finish = lambda token, status, result, error: conn.execute(SQL["finish_run"], (
        run_id, token, status, result, error, 10))
    assert (await (await finish(tb, "completed", "[0]", None)).fetchone())[0] is True
    # the stale executor A, and B itself retrying, both try to fail the completed run
    for token in (ta, tb):
        assert (await (await finish(token, "failed", None, '{"type":"Late"}')).fetchone())[0] is False
        assert (await (await finish(token, "completed", "[1]", None)).fetchone())[0] is False
    cur = await conn.execute("SELECT status, result, error, lease_token FROM durable_runs WHERE id = %s", (run_id,))
    assert await cur.fetchone() == ("completed", [0], None, None)
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
    await admin.execute("ALTER FUNCTION durable_finish_with_event(uuid, bigint, integer, integer, text, text, text, "
                        "jsonb, text, jsonb, jsonb, integer) RENAME TO durable_finish_with_event_away")
    try:
        async with durable.Engine(db.dsn, schema=db.schema, lease_ttl_s=1.0, poll_interval_s=0.2) as e:
            h = await e.start(broken_flow, "x")
            await eventually(lambda: _ended(seen, h.run_id), what="the execution to end")
            assert _ended(seen, h.run_id) == "error"
            assert await h.status() == "running"  # not failed: it resumes from its journal
            await admin.execute("ALTER FUNCTION durable_finish_with_event_away(uuid, bigint, integer, integer, "
                                "text, text, text, jsonb, text, jsonb, jsonb, integer) RENAME TO durable_finish_with_event")
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
