"""Wake latency: a child's terminal commit -> its parent resumed, with the parent and the
child executed by different processes. ``python -m bench.wake``.

This process executes one parent that awaits ``BENCH_N`` children one after another
(``await ctx.child(...)``); a worker subprocess (``python -m bench.wake --worker``) serves
the children's queue only. The parent stays parked hot here between children, so every
iteration is: child terminal transaction (in the worker) -> notification -> claim of the
parent here -> parked coroutine resumed.

Figures (after ``BENCH_WARMUP`` discarded iterations):

* ``p50_ms`` / ``p99_ms``: the worker's wall clock when its terminal commit returned
  (``run.completed`` hook) -> this process's wall clock when the parent was resumed
  (``run.resumed`` hook). Same host, same clock. An iteration whose child finished before
  the parent even looked needs no wake and is not counted (``n`` says how many were).
* ``db_p50_ms`` / ``db_p99_ms``: the same wake measured by the database clock, from the
  start of the child's terminal transaction to the parent's claim (the hook's
  ``wake_latency_s``; it includes the terminal transaction itself).
* ``code_p50_ms``: terminal commit -> the parent's code continuing after ``await``
  (adds the journaling of ``child_completed`` under the parent's lease).

Last line: JSON with ``p50_ms``, ``p99_ms``, ``n`` (and the figures above).
Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_N`` (default 650),
``BENCH_WARMUP`` (default 20).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import durable
from durable.observe import hooks
from durable.store.rows import tree_key_of

N = int(os.environ.get("BENCH_N", "650"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "20"))
KIDS_QUEUE = "bench_wake_kids"
ROOT = Path(__file__).resolve().parent.parent

_current = [-1]                        # the child the parent is waiting for
_resumed_code: dict[int, float] = {}  # iteration -> wall clock when the parent's code continued


@durable.workflow("bench.wake.child")
async def child(ctx: durable.Context, i: int) -> int:
    return i


@durable.workflow("bench.wake.parent")
async def parent(ctx: durable.Context, n: int) -> int:
    total = 0
    for i in range(n):
        _current[0] = i
        total += await ctx.child(child, i, queue=KIDS_QUEUE)
        _resumed_code[i] = time.time()
    return total


# --- the worker subprocess ----------------------------------------------------------------


async def worker(dsn: str, schema: str) -> None:
    """Execute children until stdin closes; then print {child run id: commit time} as JSON."""
    done: dict[str, float] = {}
    hooks.on("run.completed", lambda ev: done.__setitem__(str(ev["run_id"]), time.time()))
    async with durable.Engine(dsn, schema=schema, queues=(KIDS_QUEUE,), metrics=False):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    print(json.dumps(done), flush=True)


# --- the measuring process ----------------------------------------------------------------


async def main() -> dict[str, Any]:
    from bench.common import bench_schema, percentile, progress

    total = N + WARMUP
    async with bench_schema("wake") as (dsn, schema):
        proc = subprocess.Popen([sys.executable, "-m", "bench.wake", "--worker", dsn, schema], cwd=str(ROOT),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            if not line.startswith("ready"):
                raise RuntimeError(f"bench worker did not start: {line!r}")
            progress(f"worker pid {proc.pid} serves {KIDS_QUEUE}; parent here (pid {os.getpid()}), "
                     f"{total} sequential children")
            resumed: dict[int, tuple[float, float | None, str]] = {}  # child i -> first resume after it
            run_id: list[Any] = []

            def on_resumed(ev: hooks.HookEvent) -> None:
                if run_id and ev["run_id"] == run_id[0] and ev["source"] != "start":
                    resumed.setdefault(_current[0], (time.time(), ev.get("wake_latency_s"), ev["source"]))

            detach = hooks.on("run.resumed", on_resumed)
            try:
                async with durable.Engine(dsn, schema=schema, metrics=False) as engine:
                    t0 = time.perf_counter()
                    h = await engine.start(parent, total)
                    run_id.append(h.run_id)
                    assert await h.result(timeout=600) == total * (total - 1) // 2
                    elapsed = time.perf_counter() - t0
                    async with engine.pool.connection() as conn:
                        cur = await conn.execute(  # the parent is the root: its children are in its tree
                            "SELECT id::text, parent_pos FROM durable_runs WHERE tree_key = %s AND parent_id = %s",
                            (tree_key_of(h.run_id), h.run_id))
                        child_at = {r[0]: r[1] for r in await cur.fetchall()}
            finally:
                detach()
            proc.stdin.close()  # type: ignore[union-attr]
            out = await asyncio.to_thread(proc.stdout.read)  # type: ignore[union-attr]
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)
        committed = json.loads(out.strip().splitlines()[-1])
        order = sorted(child_at, key=lambda cid: child_at[cid])  # child i in start order
        wall, db, code, sources = [], [], [], {}
        for i, cid in enumerate(order):
            if i < WARMUP or i not in resumed:
                continue
            t_res, lat, src = resumed[i]
            wall.append((t_res - committed[cid]) * 1000)
            if lat is not None:
                db.append(lat * 1000)
            code.append((_resumed_code[i] - committed[cid]) * 1000)
            sources[src] = sources.get(src, 0) + 1
        progress(f"{total} iterations in {elapsed:.2f} s ({elapsed / total * 1000:.2f} ms per child round trip); "
                 f"resumed by {sources}")
        progress(f"commit -> resumed: p50 {percentile(wall, 50):.3f} ms, p99 {percentile(wall, 99):.3f} ms, "
                 f"max {max(wall):.3f} ms; db clock p50 {percentile(db, 50):.3f} ms; "
                 f"code continues p50 {percentile(code, 50):.3f} ms")
    return {"p50_ms": round(percentile(wall, 50), 3), "p99_ms": round(percentile(wall, 99), 3), "n": len(wall),
            "db_p50_ms": round(percentile(db, 50), 3), "db_p99_ms": round(percentile(db, 99), 3),
            "code_p50_ms": round(percentile(code, 50), 3), "round_trip_ms": round(elapsed / total * 1000, 3)}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    else:
        from bench.common import run

        run(main)
