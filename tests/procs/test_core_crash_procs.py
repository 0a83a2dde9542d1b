"""Crashes and races across worker processes (tests/support/worker_proc.py) against real
PostgreSQL: SIGKILL between steps (the run resumes in another process, every step ran
once, the dead holder's lease epoch is worthless), and two processes racing for the
same runs. (The in-process races: tests/integration/test_core_crash.py.)"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import durable
from durable.store.events import append_event
from wf_core import MarkJob, marks_flow, read_marks
from helpers import events, eventually, tree_key


# --- a worker killed between steps --------------------------------------------------------


async def test_sigkill_between_steps_resumes_in_another_process(db, worker_procs, tmp_path):
    path, flag = str(tmp_path / "marks"), str(tmp_path / "go")
    a = worker_procs("wf_core", "--lease-ttl", "2")
    conn = await db.conn()
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        h = await client.start(marks_flow, MarkJob(path=path, n=4, gate_at=2, flag=flag))

        async def a_reached_gate():  # marks 0 and 1 journaled; the gate step is in flight
            evs = await events(conn, h.run_id)
            return [e[3] for e in evs] == ["core.mark", "core.mark"] and evs
        await eventually(a_reached_gate, what="worker A to journal two steps")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        info = await h.info()
        assert info.status == "running" and info.lease_owner == a.owner  # a dead holder's lease
        dead_epoch = info.lease_epoch
        assert read_marks(path) == [(0, a.pid), (1, a.pid)]

        open(flag, "w").close()
        b = worker_procs("wf_core", "--lease-ttl", "2")
        assert await h.result(timeout=30) == [0, 10, 20, 30]

    marks = read_marks(path)
    assert Counter(k for k, _ in marks) == {0: 1, 1: 1, 2: 1, 3: 1}  # every step ran exactly once
    assert marks == [(0, a.pid), (1, a.pid), (2, b.pid), (3, b.pid)]
    evs = await events(conn, h.run_id)
    assert [(e[1], e[2], e[3]) for e in evs] == [
        (0, "step_completed", "core.mark"), (1, "step_completed", "core.mark"),
        (2, "step_completed", "core.gate"), (3, "step_completed", "core.mark"),
        (4, "step_completed", "core.mark")]
    assert [e[4]["result"] for e in evs] == [0, 10, True, 20, 30]
    # B claimed with a new lease epoch; the dead process's epoch is worthless now
    assert not await append_event(conn, tree_key(h.run_id), h.run_id, dead_epoch, 99, None, "step_completed", "x",
                                  "{}")


# --- two processes racing ---------------------------------------------------------------------


async def test_two_worker_processes_never_run_one_run_twice(db, worker_procs, tmp_path):
    worker_procs("wf_core", "--lease-ttl", "5")
    worker_procs("wf_core", "--lease-ttl", "5")
    paths = [str(tmp_path / f"m{i}") for i in range(12)]
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        handles = [await client.start(marks_flow, MarkJob(path=p, n=3)) for p in paths]
        results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    assert results == [[0, 10, 20]] * len(paths)
    for p in paths:
        marks = read_marks(p)
        assert sorted(k for k, _ in marks) == [0, 1, 2], marks
        assert len({pid for _, pid in marks}) == 1  # one process advanced the run
