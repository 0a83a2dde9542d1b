"""Schedules fired by three dispatcher processes in real time: a schedule every second for
about ten seconds starts exactly one run per tick (no gap, no duplicate), also when one
of the dispatchers is SIGKILLed while they fire."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from durable.ticks import TickSpec, schedule_run_id

import wf_schedules as W  # noqa: F401  (registers the workflows the processes run)
from helpers import ROOT, new_engine, rows


async def fired_ticks(db, schedule_id: str, since: datetime, until: datetime) -> tuple[list[datetime], int]:
    """The ticks of a 1 s schedule that have a run, and how many runs the workflow has."""
    found = {r[0] for r in await rows(db, "SELECT id FROM durable_runs WHERE workflow = 'sched.tick'")}
    ticks = TickSpec.parse(None, timedelta(seconds=1)).between(since, until, 100_000)
    return [t for t in ticks if schedule_run_id(schedule_id, t) in found], len(found)


async def run_three_dispatchers(db, worker_procs, *, kill_after: float | None) -> None:
    procs = [worker_procs("wf_schedules", "--poll", "0.5") for _ in range(3)]
    async with new_engine(db, execute=False) as client:
        await client.schedules.create("every-second", "sched.tick", {"from": "schedule"},
                                      every=timedelta(seconds=1), overlap="allow_all")
        created = datetime.now(UTC)
        started = time.monotonic()
        killed = False
        while time.monotonic() - started < 10.5:
            if kill_after is not None and not killed and time.monotonic() - started > kill_after:
                procs[0].send_signal(signal.SIGKILL)  # whatever it was doing: a round, a run, idle
                procs[0].wait(10)
                killed = True
            await asyncio.sleep(0.05)
        await client.schedules.pause("every-second")
        stopped = datetime.now(UTC)
        s = await client.schedules.get("every-second")
    ticks, runs = await fired_ticks(db, "every-second", created - timedelta(seconds=1), stopped)
    assert len(ticks) >= 9, ticks  # ~10 s of ticks
    first, last = ticks[0], ticks[-1]
    assert ticks == [first + timedelta(seconds=i) for i in range(len(ticks))], "a tick was lost"
    assert runs == len(ticks), "a tick was started twice, or a run of no tick exists"
    assert s.fired >= len(ticks) and s.last_fire_at == last
    assert (stopped - last).total_seconds() < 2.5  # firing went on to the end (after the kill too)
    # each tick was fired within ~a second of its time, by whichever dispatcher got it
    lags = await rows(db, "SELECT id, created_at FROM durable_runs WHERE workflow = 'sched.tick'")
    by_id = {schedule_run_id("every-second", t): t for t in ticks}
    late = [(created_at - by_id[rid]).total_seconds() for rid, created_at in lags]
    assert max(late) < (3.0 if kill_after is not None else 1.5), sorted(late)
    done = await rows(db, "SELECT count(*) FROM durable_runs WHERE workflow = 'sched.tick' AND status = 'completed'")
    assert done[0][0] >= len(ticks) - 3  # executed by the dispatchers too


async def test_three_dispatchers_one_run_per_tick(db, worker_procs):
    await run_three_dispatchers(db, worker_procs, kill_after=None)


async def test_a_dispatcher_sigkilled_mid_run_loses_and_doubles_no_tick(db, worker_procs):
    await run_three_dispatchers(db, worker_procs, kill_after=4.5)


async def test_uuid_of_tick_is_stable_across_processes():
    # the same (schedule, tick) gives the same run id in any process: a pure function of both
    t = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert schedule_run_id("every-second", t) == uuid.uuid5(
        uuid.NAMESPACE_URL, "durable:schedule:every-second:2026-05-01T12:00:00.000000Z")


def test_readme_schedules_example_runs_as_written(db, tmp_path):
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Schedules\n\n```python\n(.*?)```", text, re.S)
    assert m, "README has no python block under '## Schedules'"
    script = tmp_path / "schedules_example.py"
    script.write_text(m.group(1))
    env = {**os.environ, "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["True True", "rolled up eu"]
