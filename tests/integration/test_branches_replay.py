"""Concurrent branches inside one workflow replay deterministically.

A workflow may run branches concurrently (asyncio.gather, asyncio.create_task,
asyncio.TaskGroup, ctx.start_children + ctx.gather), each branch doing several durable
operations (steps, children, durable sleeps, signal waits, nested concurrency). Live,
the branches' operations complete in whatever order timing gives; a cold replay from
the journal must hand every branch its own outcomes regardless: the run completes with
exactly the result computed from its input, no NonDeterminismError, no step result
swapped between branches, every step journaled once.

The workflow (tests/support/wf_branches.py, ``branches.shape``) interprets a JSON shape; the
property tests draw random shapes and run each

(a) on an engine with ``max_parked=0``: every suspension evicts the in-memory coroutine,
    so every resume is a cold replay from the journal;
(b) with crashes: after random delays the executing engine is closed (``grace=0``) and
    a new one opened on the same schema, one to three times.

Every run ends with a marker step and a final ``wait_signal("finish")``; the test sends
"finish" only once the run is suspended there (in (b) after one more restart), so the
result comes out of a cold replay of the complete history, and that replay must add
nothing to the journal but the 'finish' signal (no divergence, nothing re-executed).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import durable
import wf_branches as W
from helpers import tree_key

RUN_TIMEOUT_S = 10.0  # one run, start to result (a correct one takes < 1 s); a hang fails the example

# no example database (nothing written under the repo) and no explain phase (it re-runs
# a failing example hundreds of times: minutes against a broken engine)
SETTINGS = settings(max_examples=25, deadline=None, database=None, print_blob=True,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- engines and journal -----------------------------------------------------------------


def executor(db, **kw: Any) -> durable.Engine:
    opts: dict[str, Any] = dict(schema=db.schema, poll_interval_s=0.2, lease_ttl_s=3.0, sticky_grace_s=0.2)
    opts.update(kw)
    return durable.Engine(db.dsn, **opts)


def client(db) -> durable.Engine:
    """Starts runs, sends signals, waits for results; executes nothing (survives the crashes)."""
    return durable.Engine(db.dsn, schema=db.schema, execute=False, poll_interval_s=0.2)


async def journal(c: durable.Engine, run_id: uuid.UUID) -> list[tuple]:
    """(seq, key, kind, name, data) of the run's events; key is the journal key: the
    position in the main branch, or the branch operation ("0.1:2") of a concurrent branch."""
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, coalesce(op, pos::text), kind, name, data FROM durable_events WHERE run_id = %s ORDER BY seq", (run_id,))
        return [tuple(r) for r in await cur.fetchall()]


async def state(c: durable.Engine, run_id: uuid.UUID) -> str:
    """'final' once the run waits for 'finish' (marker journaled, suspended); 'terminal'
    once it ended; else 'running'."""
    status = await c.get_handle(run_id).status()
    if status in ("completed", "failed", "cancelled"):
        return "terminal"
    if status == "suspended":
        async with c.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM durable_events WHERE run_id = %s AND kind = 'step_completed' "
                "AND name = 'branches.done'", (run_id,))
            if await cur.fetchone() is not None:
                return "final"
    return "running"


def show(evs: list[tuple]) -> str:
    return "\n".join(f"  seq={s} key={p!r} {k} {n} {json.dumps(d.get('result', d.get('payload', '')))}"
                     for s, p, k, n, d in evs)


class Run:
    """One run of ``branches.shape`` driven through replays and crashes."""

    def __init__(self, db, root: dict, *, max_parked: int | None, signal_delays_ms: list[int] | None = None):
        self.db = db
        self.root = root
        self.max_parked = max_parked
        self.tag = uuid.uuid4().hex[:10]
        self.signals = [(o["name"], o["v"]) for o in W.walk(root) if o["op"] == "signal"]
        self.signal_delays_ms = signal_delays_ms or [30] * len(self.signals)
        self.deadline = time.monotonic() + RUN_TIMEOUT_S
        self.failures: list[dict] = []  # run.failed hook events of this process
        self.engine: durable.Engine | None = None
        self.restarts = 0

    def _new_engine(self) -> durable.Engine:
        kw = {} if self.max_parked is None else {"max_parked": self.max_parked}
        return executor(self.db, **kw)

    async def _crash(self) -> None:
        """Close the executing engine at once (leases released) and open a new one."""
        await self.engine.close(grace=0)  # type: ignore[union-attr]
        self.engine = await self._new_engine().open()
        self.restarts += 1

    async def _send_signals(self, c: durable.Engine, run_id: uuid.UUID) -> None:
        for (name, v), ms in zip(self.signals, self.signal_delays_ms):
            await asyncio.sleep(ms / 1000)
            await c.signal(run_id, name, v)

    async def _until(self, c: durable.Engine, run_id: uuid.UUID, seconds: float | None) -> str:
        """Poll until the run is at its final wait or terminal (or ``seconds`` passed: 'running')."""
        stop = self.deadline if seconds is None else min(self.deadline, time.monotonic() + seconds)
        while True:
            s = await state(c, run_id)
            if s != "running" or time.monotonic() >= stop:
                return s
            await asyncio.sleep(0.02)

    def _context(self, evs: list[tuple], extra: str = "") -> str:
        return (f"{extra}\nshape: {json.dumps(self.root)}\nmax_parked={self.max_parked} restarts={self.restarts}"
                f"\nrun.failed events: {self.failures}\njournal:\n{show(evs)}")

    async def go(self, crash_after_ms: list[int] = (), restart_before_finish: bool = False) -> dict[str, Any]:
        detach = durable.hooks.on("run.failed", lambda ev: self.failures.append(
            {"workflow": ev.get("workflow"), "error_type": ev.get("error_type")}))
        async with client(self.db) as c:
            h = await c.start(W.shape_flow, {"tag": self.tag, "root": self.root})
            rid = h.run_id
            sender = asyncio.create_task(self._send_signals(c, rid))
            self.engine = await self._new_engine().open()
            try:
                for ms in crash_after_ms:
                    if await self._until(c, rid, ms / 1000) != "running":
                        break
                    await self._crash()
                s = await self._until(c, rid, None)
                if s == "running":
                    info = await h.info()
                    sent = "all sent" if sender.done() and sender.exception() is None else \
                        f"sender failed: {sender.exception()!r}" if sender.done() else "sender still sending"
                    raise AssertionError(self._context(
                        await journal(c, rid),
                        f"HANG: run {rid} neither finished nor reached its final wait within {RUN_TIMEOUT_S} s "
                        f"(status {info.status}, lease owner {info.lease_owner}; signals: {sent})"))
                before = await journal(c, rid)
                if s == "final":
                    if restart_before_finish:
                        await self._crash()
                    await c.signal(rid, "finish")
                try:
                    result = await h.result(timeout=max(1.0, self.deadline - time.monotonic()))
                except durable.RunFailedError as exc:
                    raise AssertionError(self._context(
                        await journal(c, rid), f"run FAILED: {exc.type}: {exc.message}")) from None
                except durable.RunTimeoutError:
                    raise AssertionError(self._context(
                        await journal(c, rid), f"HANG: run {rid} did not finish after 'finish'")) from None
                after = await journal(c, rid)
            finally:
                detach()
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                await self.engine.close(grace=0)
        return {"run_id": rid, "result": result, "before": before, "after": after, "reached_final": s == "final"}


def check(run: Run, out: dict[str, Any], *, exactly_once: bool) -> None:
    """Everything the run must satisfy once it completed."""
    evs = out["after"]
    ctx = run._context(evs)
    want = W.expected(run.root)
    assert out["result"] == want, f"WRONG RESULT (swapped between branches?)\n got: {out['result']}\nwant: {want}{ctx}"
    assert not [f for f in run.failures if f["error_type"] == "NonDeterminismError"], ctx
    assert out["reached_final"], "the run completed without waiting for 'finish'" + ctx
    # the journal: seq 1..N without gaps
    seqs = [e[0] for e in evs]
    assert seqs == list(range(1, len(evs) + 1)), f"journal seqs not contiguous: {seqs}{ctx}"
    # every step journaled once: one step_completed per key, one per value step op
    steps = [e for e in evs if e[2] == "step_completed"]
    per_pos = Counter(json.dumps(e[1]) for e in steps)
    assert all(n == 1 for n in per_pos.values()), f"a key has several step_completed: {per_pos}{ctx}"
    want_steps = sorted(o["v"] for o in W.walk(run.root) if o["op"] == "step")
    got_steps = sorted(e[4]["result"] for e in steps if e[3] == "branches.value")
    assert got_steps == want_steps, f"journaled step results {got_steps} != step ops {want_steps}{ctx}"
    assert [e[4]["result"] for e in steps if e[3] == "branches.done"] == [run.tag], ctx
    # each signal consumed once, with its own payload
    sigs = sorted((e[3], e[4]["payload"]) for e in evs if e[2] == "signal_received")
    assert sigs == sorted(run.signals + [("finish", None)]), f"signals consumed: {sigs}{ctx}"
    # the final cold replay of the complete history diverged nowhere: it journaled the
    # 'finish' signal and nothing else (no step re-run, no child re-started, no new timer)
    key = lambda e: (e[0], json.dumps(e[1]), e[2], e[3])  # noqa: E731
    assert [key(e) for e in evs[:len(out["before"])]] == [key(e) for e in out["before"]], ctx
    tail = [(e[2], e[3]) for e in evs[len(out["before"]):]]
    assert tail == [("signal_received", "finish")], f"the final replay journaled {tail}{ctx}"
    if exactly_once:  # no crash: nothing was in flight when a coroutine was evicted
        ran = {v: W.EXECUTED[f"{run.tag}|{v}"] for v in want_steps}
        assert all(n == 1 for n in ran.values()), f"step executions: {ran}{ctx}"


# --- shapes --------------------------------------------------------------------------------

LEAF = st.one_of(
    st.builds(lambda ms: {"op": "step", "ms": ms}, st.integers(0, 20)),
    st.builds(lambda k: {"op": "child", "key": k}, st.booleans()),
    st.builds(lambda ms: {"op": "sleep", "ms": ms}, st.integers(10, 100)),
    st.just({"op": "signal"}),
    st.builds(lambda n, k: {"op": "fanout", "n": n, "key": k}, st.integers(2, 3), st.booleans()),
)


def groups(depth: int = 0) -> st.SearchStrategy[dict]:
    """A concurrent group; branches hold 1-3 ops (1-2 when nested); nesting 2 deep at most."""
    op = LEAF if depth >= 2 else st.one_of(LEAF, st.builds(lambda g: {"op": "group", "g": g}, groups(depth + 1)))
    width, length = (3, 3) if depth == 0 else (2, 2)
    branch = st.lists(op, min_size=1, max_size=length)
    return st.builds(lambda comb, bs: {"comb": comb, "branches": bs},
                     st.sampled_from(W.COMBINATORS), st.lists(branch, min_size=2, max_size=width))


def size(g: dict) -> int:
    return sum(len(o.get("vs", ())) or 1 for o in W.walk(g))


SHAPES = groups().map(W.label).filter(lambda g: size(g) <= 14)


# --- property tests ------------------------------------------------------------------------


@SETTINGS
@given(root=SHAPES, data=st.data())
async def test_random_shapes_replay_cold_at_every_resume(db, root, data):
    """(a) max_parked=0: every resume (after a sleep, a signal, a child, 'finish') is a cold replay."""
    n_sig = sum(1 for o in W.walk(root) if o["op"] == "signal")
    delays = data.draw(st.lists(st.integers(0, 150), min_size=n_sig, max_size=n_sig), label="signal delays ms")
    run = Run(db, root, max_parked=0, signal_delays_ms=delays)
    out = await run.go()
    check(run, out, exactly_once=True)


@SETTINGS
@given(root=SHAPES, data=st.data())
async def test_random_shapes_survive_random_crashes(db, root, data):
    """(b) hot parking, but the engine is closed (grace 0) and replaced after random delays,
    and once more before 'finish': each new engine replays the run cold from its journal."""
    n_sig = sum(1 for o in W.walk(root) if o["op"] == "signal")
    delays = data.draw(st.lists(st.integers(0, 150), min_size=n_sig, max_size=n_sig), label="signal delays ms")
    crashes = data.draw(st.lists(st.integers(10, 300), min_size=1, max_size=3), label="crash after ms")
    run = Run(db, root, max_parked=None, signal_delays_ms=delays)
    out = await run.go(crash_after_ms=crashes, restart_before_finish=True)
    event(f"engine restarts: {run.restarts}")
    check(run, out, exactly_once=False)


# --- examples ------------------------------------------------------------------------------


def step(ms: int) -> dict:
    return {"op": "step", "ms": ms}


async def test_gather_of_two_branches_two_steps_each_replays_cold(db):
    """Positions live: a0, b0 (both start at once), then b1 (b0 is quicker), then a1.
    The engine is replaced at 250 ms while a1 runs, and 'finish' resumes with
    max_parked=0: two cold replays of a history in which the branches interleave (a
    replay by position order alone hands b0's result to a1)."""
    root = W.label({"comb": "gather", "branches": [[step(100), step(400)], [step(50), step(0)]]})
    run = Run(db, root, max_parked=0)
    assert W.expected(root) == [["b0:0", "b0:1"], ["b1:0", "b1:1"]]
    out = await run.go(crash_after_ms=[250])
    assert run.restarts == 1
    check(run, out, exactly_once=False)


async def test_taskgroup_branches_with_steps_and_durable_sleeps_replay_cold(db):
    """asyncio.TaskGroup; each sleep suspends the run, and with max_parked=0 each resume
    replays the branches' interleaved steps from the journal."""
    root = W.label({"comb": "taskgroup", "branches": [
        [step(15), {"op": "sleep", "ms": 60}, step(0), step(10)],
        [step(0), step(5), {"op": "sleep", "ms": 20}, step(15)],
        [{"op": "sleep", "ms": 40}, step(0)],
    ]})
    run = Run(db, root, max_parked=0)
    assert W.expected(root) == [["b0:0", "b0:1", "b0:2", "b0:3"], ["b1:0", "b1:1", "b1:2", "b1:3"],
                                ["b2:0", "b2:1"]]
    out = await run.go(restart_before_finish=True)
    check(run, out, exactly_once=True)


async def test_create_task_branches_with_unkeyed_children_and_signals_replay_cold(db):
    """asyncio.create_task per branch, children without keys (ids derived per call site
    and ordinal), a signal wait and a nested gather; max_parked=0 plus one restart."""
    root = W.label({"comb": "tasks", "branches": [
        [step(10), {"op": "child", "key": False}, step(0)],
        [{"op": "child", "key": False}, {"op": "signal"}, step(5)],
        [step(0), {"op": "group", "g": {"comb": "gather", "branches": [
            [step(12), {"op": "child", "key": False}], [{"op": "fanout", "n": 2, "key": False}, step(0)]]}}],
    ]})
    run = Run(db, root, max_parked=0, signal_delays_ms=[120])
    assert W.expected(root) == [
        ["b0:0", "b0:1", "b0:2"], ["b1:0", "b1:1", "b1:2"],
        ["b2:0", [["b2:1.0:0", "b2:1.0:1"], [["b2:1.1:0/0", "b2:1.1:0/1"], "b2:1.1:1"]]]]
    out = await run.go(crash_after_ms=[60])
    check(run, out, exactly_once=False)


async def test_nested_gather_after_a_live_child_wait_keeps_its_branch_paths(db):
    """A branch waits for a child live (the engine starts its driver task from inside that
    branch, in a context of no branch), then runs a nested gather. The driver task must not
    count as one of the branch's tasks: live the nested branches were numbered 1.1 and 1.2,
    on the cold replay 1.0 and 1.1, and the two steps' results came back swapped."""
    root = W.label({"comb": "gather", "branches": [
        [step(0)], [{"op": "child", "key": False}, {"op": "group", "g": {"comb": "gather", "branches": [
            [step(0)], [step(0)]]}}]]})
    run = Run(db, root, max_parked=0)
    out = await run.go()
    check(run, out, exactly_once=True)


@pytest.mark.parametrize("attempt", range(3))
async def test_a_branch_that_ends_while_another_sleeps_does_not_hang_the_run(db, attempt):
    """Branch 0 waits for a child, branch 1 sleeps. The child's outcome resumes branch 0,
    which returns without waiting again: the engine must look at the remaining waits once
    more (live, the timer was never armed and the run hung 'running' in 10 of 15 tries)."""
    root = W.label({"comb": "gather", "branches": [[{"op": "child", "key": False}], [{"op": "sleep", "ms": 23}]]})
    run = Run(db, root, max_parked=0)
    out = await run.go()
    check(run, out, exactly_once=True)


@pytest.mark.parametrize("attempt", range(3))
async def test_a_step_starting_while_another_branch_sleeps_runs_once(db, attempt):
    """Between two steps of branch 0 (journaling the first, about to start the second)
    branch 1 sleeps: no task could be seen waiting on a durable operation yet the run is
    not idle. It must not be suspended then (it was, and the second step ran twice)."""
    root = W.label({"comb": "gather", "branches": [[step(1), step(2)], [{"op": "sleep", "ms": 10}]]})
    run = Run(db, root, max_parked=0)
    out = await run.go()
    check(run, out, exactly_once=True)


async def test_tasks_created_inside_a_durable_operation_do_not_shift_branch_paths(db):
    """A hook handler that starts a task (as the hooks documentation allows) runs inside
    the operation that emitted it, e.g. child.started inside ctx.start_child, and so does
    a connection pool's wait for a free connection (asyncio.wait_for makes a task). Such
    tasks are the engine's, not the workflow's: live they were numbered as the branch's
    first task, so its nested task became '0.1' live and '0.0' on the cold replay, and the
    step ran twice (its journaled outcome was never found)."""
    spawned: list[asyncio.Task] = []
    detach = durable.hooks.on("child.started", lambda ev: spawned.append(
        asyncio.get_running_loop().create_task(asyncio.sleep(0))))
    tag = uuid.uuid4().hex[:10]
    try:
        async with executor(db, max_parked=0) as e:
            h = await e.start(W.op_tasks_flow, tag)
            got = await h.result(timeout=RUN_TIMEOUT_S)
            evs = await journal(e, h.run_id)
    finally:
        detach()
    assert spawned, "the hook did not run"
    assert got == ["child", "inner"]
    steps = [(key, name) for _, key, kind, name, _ in evs if kind == "step_completed"]
    assert steps == [("0.0:0", "branches.value")], f"{steps}\n{show(evs)}"
    assert W.EXECUTED[f"{tag}|inner"] == 1, f"the nested task's step ran {W.EXECUTED[f'{tag}|inner']} times"


async def test_a_graceful_shutdown_inside_a_taskgroup_hands_the_run_over(db):
    """The engine closes (graceful) while one TaskGroup branch runs a step and another waits
    for a signal: the step's branch stops at its next durable operation, and the TaskGroup
    wraps that stop in an exception group. That group is not the run's outcome (the run was
    failed with 'BaseExceptionGroup: unhandled errors in a TaskGroup'): the run is handed
    over and completes on the next engine."""
    tag = uuid.uuid4().hex[:10]
    async with client(db) as c:
        h = await c.start(W.taskgroup_shutdown_flow, tag)
        first = await executor(db).open()
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while W.EXECUTED[f"{tag}|slow"] == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the slow step is running
        finally:
            await first.close(grace=5)
        assert await h.status() in ("pending", "suspended"), await h.status()
        async with executor(db):
            await c.signal(h.run_id, "go", "went")
            assert await h.result(timeout=RUN_TIMEOUT_S) == ["slow", "next", "went"]
        assert W.EXECUTED[f"{tag}|slow"] == 1 and W.EXECUTED[f"{tag}|next"] == 1


async def test_giving_a_lease_back_waits_for_a_journal_write_in_flight(db):
    """A shutdown gives a run's lease back while a journal write is held up (another
    transaction locks the run row): the write has taken its seqs (buffered step outcomes
    and a child start) and is then cancelled with the execution. The release took the next
    seqs at once, the cancelled write gave its own back, and the journal was left with a
    gap ('journal seqs not contiguous', first seen in the random-crash property test). The
    release now waits for the write in flight to end."""
    tag = uuid.uuid4().hex[:10]
    async with client(db) as c:
        first = await executor(db).open()
        h = await first.start(W.give_back_flow, tag)
        lock = await db.conn(autocommit=False)
        try:
            await lock.execute("SELECT 1 FROM durable_runs WHERE tree_key = %s AND id = %s FOR UPDATE",
                               (tree_key(h.run_id), h.run_id))
            W.GATE.setdefault(tag, asyncio.Event()).set()  # both branches go on: the next write waits
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while first.runs.active[h.run_id].journal.io == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            closing = asyncio.ensure_future(first.close(grace=0))
            await asyncio.sleep(0.2)
        finally:
            await lock.rollback()
            await lock.close()
        await closing
        async with executor(db):
            assert await c.get_handle(h.run_id).result(timeout=RUN_TIMEOUT_S) == ["slow", "child"]
        evs = await journal(c, h.run_id)
    seqs = [e[0] for e in evs]
    assert seqs == list(range(1, len(evs) + 1)), f"journal seqs not contiguous: {seqs}\n{show(evs)}"
