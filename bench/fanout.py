"""Fan-out / fan-in: one parent starts N one-step children in one transaction and gathers
their results. ``python -m bench.fanout``.

The parent runs in this process. The children run in ``BENCH_WORKERS`` worker
subprocesses (``python -m bench.fanout --worker``) serving the children's queue, or in
this process too when ``BENCH_WORKERS=0``. Each size is timed from ``engine.start`` of
the parent to its result (fan-out transaction, every child claimed, stepped and
finished, every outcome journaled in the parent, the parent's terminal commit), best of
``BENCH_REPEAT`` runs on a fresh parent each time.

With ``BENCH_LONG_WRITER=1`` another connection holds a writing transaction open for the
whole measurement (``BEGIN; SELECT pg_current_xact_id();``, neither committed nor rolled
back until the end; checked in pg_stat_activity: an xid, ``idle in transaction``), so the
xmin horizon cannot advance while the parent fans out and in: dead tuples of the fan-in
stay visible to every scan. Only the warm-up runs before it is opened.

Last line: JSON with ``s_1000``, ``s_10000``, ``per_child_ms_1000``, ``per_child_ms_10000``
(plus ``scaling``: per-child cost at 10,000 / at 1,000, ``parent_wakes_*`` and
``long_writer``: true when the measurement ran under such a transaction).
Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_WORKERS`` (default 1),
``BENCH_REPEAT`` (default 3 for 1,000 children, 1 for 10,000), ``BENCH_SIZES``
(default ``1000,10000``), ``BENCH_LONG_WRITER`` (default 0).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

import durable
from durable.observe import hooks

WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",")]
REPEAT = os.environ.get("BENCH_REPEAT")
LONG_WRITER = os.environ.get("BENCH_LONG_WRITER", "0").strip().lower() in ("1", "true", "yes", "on")
KIDS_QUEUE = "bench_fanout_kids"
ROOT = Path(__file__).resolve().parent.parent
CHILD_SETTINGS = dict(queues=(KIDS_QUEUE,), concurrency=200, claim_batch=100, pool_size=10, metrics=False)


@durable.step("bench.fanout.work")
async def work(i: int) -> int:
    return i


@durable.workflow("bench.fanout.child")
async def child(ctx: durable.Context, i: int) -> int:
    return await ctx.step(work, i)


@durable.workflow("bench.fanout.parent")
async def parent(ctx: durable.Context, n: int) -> int:
    refs = await ctx.start_children(child, range(n), queue=KIDS_QUEUE)
    return sum(await ctx.gather(refs))


async def worker(dsn: str, schema: str) -> None:
    """Execute children until stdin closes."""
    async with durable.Engine(dsn, schema=schema, **CHILD_SETTINGS):  # type: ignore[arg-type]
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def _spawn(dsn: str, schema: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bench.fanout", "--worker", dsn, schema], cwd=str(ROOT),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"bench worker did not start: {line!r}")
    return proc


async def _writer_state(dsn: str, pid: int) -> tuple[str | None, str | None]:
    """(state, backend_xid) of backend ``pid`` in pg_stat_activity, read from another connection."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT state, backend_xid::text FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def _open_long_writer(dsn: str) -> tuple[psycopg.AsyncConnection[Any], int, str]:
    """A connection holding a transaction that has an xid, left open (idle in transaction)."""
    from bench.common import progress

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=False)
    try:
        pid = conn.info.backend_pid
        row = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
        assert row is not None
        state, xid = await _writer_state(dsn, pid)
        if state != "idle in transaction" or xid is None:
            raise RuntimeError(f"the long writer is not held: backend {pid} state {state!r}, backend_xid {xid!r}")
    except BaseException:
        await conn.close()
        raise
    progress(f"long writer: backend {pid} holds xid {xid} (pg_current_xact_id {row[0]}), {state}")
    return conn, pid, xid


async def _close_long_writer(dsn: str, held: tuple[psycopg.AsyncConnection[Any], int, str]) -> None:
    """Check the writer still held its xid for the whole measurement, then roll it back."""
    from bench.common import progress

    conn, pid, xid = held
    try:
        state, now_xid = await _writer_state(dsn, pid)
        if state != "idle in transaction" or now_xid != xid:
            raise RuntimeError(f"the long writer was not held to the end: backend {pid} state {state!r}, "
                               f"backend_xid {now_xid!r} (was {xid})")
        progress(f"long writer: backend {pid} still held xid {xid} at the end; rolled back")
        await conn.rollback()
    finally:
        await conn.close()


async def main() -> dict[str, Any]:
    from bench.common import bench_schema, progress

    figures: dict[str, Any] = {}
    async with bench_schema("fanout") as (dsn, schema):
        procs = [await _spawn(dsn, schema) for _ in range(WORKERS)]
        wakes: list[str] = []
        pid: list[Any] = [None]
        held: tuple[psycopg.AsyncConnection[Any], int, str] | None = None
        detach = hooks.on("run.resumed", lambda ev: wakes.append(ev["source"]) if ev["run_id"] == pid[0] else None)
        try:
            where = f"{WORKERS} worker process(es)" if WORKERS else "this process"
            extra: dict[str, Any] = (dict(CHILD_SETTINGS, queues=("default", KIDS_QUEUE)) if not WORKERS
                                     else {"metrics": False})
            async with durable.Engine(dsn, schema=schema, history_limit=50_000, **extra) as engine:
                progress(f"children run in {where}; parent in this process (pid {os.getpid()})")
                await engine.run(parent, 10, timeout=60)  # warm up both sides
                if LONG_WRITER:
                    held = await _open_long_writer(dsn)
                for n in SIZES:
                    repeat = int(REPEAT) if REPEAT else (3 if n <= 1000 else 1)
                    best = None
                    for r in range(repeat):
                        wakes.clear()
                        t0 = time.perf_counter()
                        h = await engine.start(parent, n)
                        pid[0] = h.run_id
                        total = await h.result(timeout=600)
                        s = time.perf_counter() - t0
                        assert total == n * (n - 1) // 2, total
                        woke = len([w for w in wakes if w != "start"])
                        progress(f"{n} children: {s:.3f} s ({s / n * 1000:.3f} ms per child), "
                                 f"parent woken {woke} times")
                        if best is None or s < best[0]:
                            best = (s, woke)
                    assert best is not None
                    figures[f"s_{n}"] = round(best[0], 3)
                    figures[f"per_child_ms_{n}"] = round(best[0] / n * 1000, 4)
                    figures[f"parent_wakes_{n}"] = best[1]
                if held is not None:
                    await _close_long_writer(dsn, held)
                    held = None
        finally:
            if held is not None:
                await held[0].close()
            detach()
            for p in procs:
                p.stdin.close()  # type: ignore[union-attr]
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
    if "per_child_ms_1000" in figures and "per_child_ms_10000" in figures:
        figures["scaling"] = round(figures["per_child_ms_10000"] / figures["per_child_ms_1000"], 3)
    figures["workers"] = WORKERS
    figures["long_writer"] = LONG_WRITER
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    else:
        from bench.common import run

        run(main)
