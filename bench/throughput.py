"""Dispatcher throughput, idle load and memory, with real dispatcher subprocesses.

    python -m bench.throughput

1. ``pgbench_insert_tps``: a raw single-row INSERT rate with pgbench at 8 clients against
   the same server, measured in the same run (the ceiling to compare with).
2. ``wf_per_s_1`` / ``wf_per_s_2``: BENCH_N (10,000) one-step workflows inserted at once
   (one statement, as pending runs) and executed by 1, then 2 ``python -m dispatcher``
   processes with default settings; from the insert's commit until the last run
   completed; median of BENCH_REPEAT (3) rounds.
3. ``idle_queries_per_s``: statements of one idle dispatcher (default 2 s poll) over
   BENCH_IDLE_S (30) seconds, counted at the server by sampling pg_stat_activity
   every 20 ms for new ``query_start`` values of its backends (found by application_name).
4. ``peak_rss_mb``: peak resident memory (VmHWM) of a dispatcher (``--concurrency
   1000``) executing BENCH_INFLIGHT (1,000) runs at once, each in a 3 s step.

This module also holds the workflows the dispatchers import (``-m bench.throughput``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import durable

ROOT = Path(__file__).resolve().parent.parent


@durable.step
async def bench_noop(n: int) -> int:
    return n


@durable.workflow("bench.throughput.one")
async def one_step(ctx: durable.Context, n: int) -> int:
    return await ctx.step(bench_noop, n)


@durable.step
async def bench_nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@durable.workflow("bench.throughput.nap")
async def nap_step(ctx: durable.Context, seconds: float) -> float:
    return await ctx.step(bench_nap, seconds)


# Pending runs inserted in one statement, as durable_start_run writes them (not leased: a
# run and its due queue row, the tree key computed from the id with built-ins only, so the
# statement calls no schema function and runs on Citus too), then the one wake-up a start
# sends, as a statement of its own (on Citus a statement on distributed tables runs on the
# workers, where no LISTEN hears a notification).
INSERT_RUNS = """
WITH ids AS (
    SELECT u, ('x' || substr(replace(u::text, '-', ''), 1, 16))::bit(64)::bigint AS k
      FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, %(n)s)) g
), runs AS (
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                              next_wakeup_at)
    SELECT k, u, u, u, %(workflow)s, 1, 'default', 'pending', to_jsonb(%(input)s::float8), %(now)s FROM ids
    RETURNING tree_key, id
)
INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at, owner, leased)
SELECT tree_key, id, 'default', %(workflow)s || ':1', %(now)s, NULL, false FROM runs
"""
NOTIFY_NEW = "SELECT pg_notify(durable_channel(), 'new|default')"
TRUNCATE_RUNS = "TRUNCATE durable_runs, durable_events, durable_due, durable_outcomes, durable_deadlines"


async def insert_runs(conn: Any, workflow: str, value: float, n: int) -> None:
    """``n`` pending runs of ``workflow`` (one statement, committed), then the start's wake-up."""
    now = (await (await conn.execute("SELECT durable_now()")).fetchone())[0]
    await conn.execute(INSERT_RUNS, {"workflow": workflow, "input": value, "n": n, "now": now})
    await conn.execute(NOTIFY_NEW)


class Proc:
    """A dispatcher subprocess whose JSON log goes to a file."""

    def __init__(self, dsn: str, schema: str, folder: Path, *flags: str, app: str | None = None) -> None:
        if app:
            dsn += ("&" if "?" in dsn else "?") + f"application_name={app}"
        self.app = app
        self.log = folder / f"dispatcher-{uuid.uuid4().hex[:6]}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DURABLE_DSN", None)
        with open(self.log, "w") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "-m", "bench.throughput", "--dsn", dsn, "--schema", schema,
                 "--metrics-port", "0", "--log-format", "json", *flags],
                cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=out)

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"dispatcher exited: {self.log.read_text()}")
            for line in self.log.read_text().splitlines():
                if '"event": "ready"' in line:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"dispatcher not ready after {timeout} s: {self.log.read_text()}")

    def rss_peak_mb(self) -> float:
        return _status_kb(self.popen.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _status_kb(self.popen.pid, "VmRSS") / 1024

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(10)


def _status_kb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise RuntimeError(f"{key} not found for pid {pid}")


async def spawn(dsn: str, schema: str, folder: Path, n: int, *flags: str) -> list[Proc]:
    """Start ``n`` dispatchers (each with its own application_name) and wait until ready."""
    procs = [Proc(dsn, schema, folder, *flags, app=f"bench_{uuid.uuid4().hex[:8]}") for _ in range(n)]
    for p in procs:
        await p.ready()
    return procs


def pgbench_tps(dsn: str, schema: str, folder: Path, seconds: int = 5) -> float | None:
    """Single-row INSERTs per second with pgbench, 8 clients (None when pgbench is missing)."""
    exe = shutil.which("pgbench")
    if exe is None:
        from bench.common import progress

        progress("pgbench not found on PATH: pgbench_insert_tps is null")
        return None
    script = folder / "insert.sql"
    script.write_text(f"INSERT INTO {schema}.pgbench_rows (v) VALUES (1);\n")
    out = subprocess.run([exe, "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(script), dsn],
                         capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"pgbench failed: {out.stdout}\n{out.stderr}")
    return float(m.group(1))


async def wait_completed(conn: Any, n: int, timeout: float) -> float:
    """Seconds until ``n`` runs are completed (polled every 50 ms)."""
    t0 = time.perf_counter()
    while True:
        done = (await (await conn.execute(
            "SELECT count(*) FROM durable_runs WHERE status = 'completed'")).fetchone())[0]
        if done >= n:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"only {done}/{n} runs completed after {timeout} s")
        await asyncio.sleep(0.05)


async def throughput(conn: Any, dsn: str, schema: str, folder: Path, dispatchers: int, n: int,
                     repeat: int) -> float:
    from bench.common import median_of, progress

    procs = await spawn(dsn, schema, folder, dispatchers)
    try:
        async def one_round(i: int) -> dict[str, float]:
            await conn.execute(TRUNCATE_RUNS)
            t0 = time.perf_counter()
            await insert_runs(conn, "bench.throughput.one", 1, n)
            progress(f"{dispatchers} dispatcher(s), round {i + 1}: {n} runs inserted in "
                     f"{time.perf_counter() - t0:.2f} s")
            elapsed = await wait_completed(conn, n, timeout=600)
            return {"wf_per_s": n / elapsed, "seconds": elapsed}

        figures = await median_of(repeat, one_round, label=f"{dispatchers} dispatcher(s)")
    finally:
        codes = [p.stop() for p in procs]
    if any(codes):
        raise RuntimeError(f"dispatcher exit codes {codes}")
    return figures["wf_per_s"]


async def idle_queries(conn: Any, dsn: str, schema: str, folder: Path, seconds: float) -> float:
    """Statements per second of one idle dispatcher (default settings), counted at the server."""
    from bench.common import progress

    await conn.execute(TRUNCATE_RUNS)
    (p,) = await spawn(dsn, schema, folder, 1)
    try:
        await asyncio.sleep(2.0)  # start-up settles
        seen: dict[int, str] = {}
        count = 0
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            rows = await (await conn.execute(
                "SELECT pid, query_start::text FROM pg_stat_activity WHERE application_name = %s",
                (p.app,))).fetchall()
            for pid, started in rows:
                if started is not None and seen.get(pid) != started:
                    count += pid in seen
                    seen[pid] = started
            await asyncio.sleep(0.02)
        progress(f"idle dispatcher: {count} statements in {seconds:.0f} s, idle RSS {p.rss_mb():.1f} MB")
        return count / seconds
    finally:
        p.stop()


async def peak_rss(conn: Any, dsn: str, schema: str, folder: Path, inflight: int) -> tuple[float, int]:
    """(peak RSS in MB, most runs seen running at once) for ``inflight`` 3 s runs."""
    from bench.common import progress

    await conn.execute(TRUNCATE_RUNS)
    (p,) = await spawn(dsn, schema, folder, 1, "--concurrency", str(inflight))
    try:
        base = p.rss_mb()
        await insert_runs(conn, "bench.throughput.nap", 3.0, inflight)
        most = 0
        t0 = time.monotonic()
        while True:
            counts = dict(await (await conn.execute(
                "SELECT status, count(*) FROM durable_runs GROUP BY 1")).fetchall())
            most = max(most, counts.get("running", 0))
            if counts.get("completed", 0) >= inflight:
                break
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"in-flight runs did not finish: {counts}")
            await asyncio.sleep(0.1)
        peak = p.rss_peak_mb()
        progress(f"{inflight} runs in flight (max {most} running at once): RSS {base:.1f} MB before, "
                 f"peak {peak:.1f} MB")
        return peak, most
    finally:
        p.stop()


async def main() -> dict[str, Any]:
    from bench.common import bench_schema, progress
    from durable.store.connections import connect

    n = int(os.environ.get("BENCH_N", "10000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    idle_s = float(os.environ.get("BENCH_IDLE_S", "30"))
    inflight = int(os.environ.get("BENCH_INFLIGHT", "1000"))
    folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    async with bench_schema("throughput") as (dsn, schema):
        conn = await connect(dsn, schema=schema, timeout=30)
        try:
            await conn.execute("CREATE TABLE pgbench_rows (id bigserial PRIMARY KEY, v int)")
            tps = await asyncio.to_thread(pgbench_tps, dsn, schema, folder)
            progress(f"pgbench: {tps} single-row inserts/s at 8 clients")
            wf1 = await throughput(conn, dsn, schema, folder, 1, n, repeat)
            progress(f"1 dispatcher: {wf1:.0f} workflows/s (median of {repeat})")
            wf2 = await throughput(conn, dsn, schema, folder, 2, n, repeat)
            progress(f"2 dispatchers: {wf2:.0f} workflows/s (median of {repeat})")
            idle = await idle_queries(conn, dsn, schema, folder, idle_s)
            rss, most = await peak_rss(conn, dsn, schema, folder, inflight)
        finally:
            await conn.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {"wf_per_s_1": round(wf1, 1), "wf_per_s_2": round(wf2, 1),
            "pgbench_insert_tps": None if tps is None else round(tps, 1),
            "idle_queries_per_s": round(idle, 3), "peak_rss_mb": round(rss, 1),
            "inflight_runs": most, "n": n, "cpus": os.cpu_count()}


if __name__ == "__main__":
    from bench.common import run

    run(main)
