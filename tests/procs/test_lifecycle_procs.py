"""Cancellation and timers across processes: runs executing in a worker process
(tests/support/worker_proc.py) stop there on a cancel from this process and can no longer
write; a cancel racing with child starts in a worker lets no child escape; a timer parked
by a SIGKILLed worker fires in another. (The in-process cancellation and timer tests:
tests/integration/test_lifecycle_cancel.py, test_lifecycle_timers.py.)"""

from __future__ import annotations

import asyncio

import pytest

import durable
from durable.store.events import append_event

from wf_lifecycle import SpawnSpec, busy_tagged, sleeper, spawner
from helpers import eventually, new_engine, rows, tree_key


async def _suspended(h) -> bool:
    return await h.status() == "suspended"


# --- cancel: executors in another process ------------------------------------------------


async def test_executors_in_another_process_stop_and_cannot_write(db, worker_procs, tmp_path, monkeypatch):
    """Runs blocked in hour-long steps in a worker process (which heartbeats only every
    20 s) are stopped there within the bound after a cancel from this process: told by
    the notification, not by their next step (each step leaves a file when its
    execution stops it). Their old lease epochs can no longer append anything."""
    monkeypatch.setenv("LC_STOP_DIR", str(tmp_path))
    worker_procs("wf_lifecycle", "--lease-ttl", "60")
    async with new_engine(db, execute=False) as client:
        tags = [f"busy-{i}" for i in range(5)]
        handles = [await client.start(busy_tagged, t) for t in tags]
        conn = await db.conn()
        await eventually(lambda: _all_status(conn, [h.run_id for h in handles], "running"), 20,
                         what="the worker to execute the runs")
        epochs = dict(await rows(conn, "SELECT id, lease_epoch FROM durable_runs"))
        assert not list(tmp_path.iterdir())
        for h in handles:
            assert await h.cancel() == 1
        await eventually(lambda: sorted(p.name for p in tmp_path.iterdir()) == tags, 10,
                         what="the worker to stop every execution")
        for h in handles:
            with pytest.raises(durable.RunCancelledError) as err:
                await h.result(timeout=5)
            assert err.value.reason == "cancelled"
        for run_id, epoch in epochs.items():
            assert not await append_event(conn, tree_key(run_id), run_id, epoch, 1, None, "step_completed",
                                          "stoppable", "{}")
        (n,), = await rows(conn, "SELECT count(*) FROM durable_events")
        assert n == 0


async def _all_status(conn, ids, status) -> bool:
    got = await rows(conn, "SELECT status FROM durable_runs WHERE id = ANY(%s)", ids)
    return len(got) == len(ids) and all(s == status for s, in got)


@pytest.mark.parametrize("stop_after", [1, 4, 9])
async def test_cancel_racing_with_child_starts_lets_no_child_escape(db, worker_procs, stop_after):
    """A parent (in a worker process) starts children one at a time, and each of them
    starts grandchildren one at a time, while this process cancels the parent: whatever
    was started before the cancel is cancelled, nothing is started after it."""
    worker_procs("wf_lifecycle", "--lease-ttl", "60")
    async with new_engine(db, execute=False) as client:
        root = await client.start(spawner, SpawnSpec(n=10, levels=2))
        conn = await db.conn()

        async def started() -> bool:
            (n,), = await rows(conn, "SELECT count(*) FROM durable_runs WHERE depth = 2")
            return n >= stop_after
        await eventually(started, 30, interval=0.005, what="grandchildren to be started")
        res = await client.cancel(root.run_id)
        assert res >= 1 + 1 + stop_after
        after = await rows(conn, "SELECT id, status FROM durable_runs ORDER BY id")
        events = await rows(conn, "SELECT run_id, seq FROM durable_events ORDER BY run_id, seq")
        assert len(after) == res, "every run of the tree was cancelled in the cascade"
        assert {s for _, s in after} == {"cancelled"}
        await asyncio.sleep(1.0)  # a straggler start or a late journal write would land here
        assert await rows(conn, "SELECT id, status FROM durable_runs ORDER BY id") == after
        assert await rows(conn, "SELECT run_id, seq FROM durable_events ORDER BY run_id, seq") == events


# --- timers: a worker killed while a run sleeps ----------------------------------------------


async def test_timer_in_a_killed_worker_fires_in_another(db, worker_procs):
    """A worker parks a sleeping run and is killed (SIGKILL): the run wakes in a second
    worker when the clock passes the fire time."""
    w1 = worker_procs("wf_lifecycle")
    async with new_engine(db, execute=False) as client:
        h = await client.start(sleeper, 120.0)
        await eventually(lambda: _suspended(h), 10, what="the run to sleep in the worker")
        w1.kill()
        w1.wait(10)
        worker_procs("wf_lifecycle")
        conn = await db.conn()
        await conn.execute("CREATE OR REPLACE FUNCTION durable_now() RETURNS timestamptz LANGUAGE sql STABLE "
                           "AS $$ SELECT now() + interval '121 s' $$")
        await conn.execute("SELECT pg_notify(durable_channel(), 'new|default')")
        assert await h.result(timeout=20) == "woke"
        kinds = [k for k, in await rows(conn, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq",
                                        h.run_id)]
        assert kinds == ["timer_started", "step_completed"]
