"""Claim cost as the tables grow: one claim and an end-to-end drain, with a backlog of
pending runs in a table of finished runs.

    python -m bench.scale

1. ``claim_ms_1k_backlog`` / ``claim_ms_100k_backlog``: one ``CLAIM_DUE`` of 50 (the
   dispatcher's statement, in a rolled-back transaction), median of 9, with BENCH_FINISHED
   (1,000,000) finished runs in the table and a pending backlog of 1,000, then BENCH_BACKLOG
   (100,000). No ANALYZE is run: the plan must not depend on fresh statistics.
   ``claim_ratio_100k`` = the second ÷ the first (flat = 1).
2. ``drain_wf_per_s_1k`` / ``drain_wf_per_s_100k``: an in-process engine (default
   settings) executes a backlog of one-step workflows inserted as pending runs, from the
   engine's start to the last completion (counted by the ``run.completed`` hook, so the
   count costs the database nothing), in the same big table; ``backlog_drain_ratio_100k``
   = the 100k rate ÷ the 1k rate (target ≥ 0.8).

Env: ``DURABLE_DSN``, ``BENCH_FINISHED`` (1000000), ``BENCH_BACKLOG`` (100000).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import durable
from durable.observe import hooks
from durable.store.statements import SQL
from durable.store.connections import connect

from bench.common import bench_schema, progress, run

FINISHED = int(os.environ.get("BENCH_FINISHED", "1000000"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "100000"))
SMALL = 1000
WORKFLOW = "bench.scale.one"


@durable.step
async def scale_noop(n: int) -> int:
    return n


@durable.workflow(WORKFLOW)
async def scale_one(ctx: durable.Context, n: int) -> int:
    return await ctx.step(scale_noop, n)


FILL_FINISHED = """
INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, queue, status, input, result,
                          finished_at, created_at, started_at)
SELECT u, u, u, 'bench.scale.done', 1, 'default', 'completed', '1', '1',
       now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
  FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, %(n)s)) g
"""

FILL_PENDING = """
INSERT INTO durable_runs (id, root_id, chain_root_id, workflow, version, queue, status, input, next_wakeup_at)
SELECT u, u, u, %(workflow)s, 1, 'default', 'pending', '1', now() - interval '1 second' * random()
  FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, %(n)s)) g
"""


async def claim_ms(conn: Any, repeat: int = 9) -> float:
    params = {"queues": ["default"], "workflows": [f"{WORKFLOW}:1"], "owner": "bench", "grace": 2.0,
              "ttl": 30.0, "limit": 50, "scan": 50 * 4 + 16}
    times = []
    for _ in range(repeat):
        async with conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            got = await (await conn.execute(SQL["claim_due"], params)).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
        if len(got) != 50:
            raise RuntimeError(f"the claim returned {len(got)} runs, not 50")
    return statistics.median(times)


async def drain(dsn: str, schema: str, n: int) -> float:
    done = 0
    finished = asyncio.Event()

    def on_completed(ev: dict[str, Any]) -> None:
        nonlocal done
        if ev.get("workflow") == WORKFLOW:
            done += 1
            if done >= n:
                finished.set()

    detach = hooks.on("run.completed", on_completed)
    try:
        t0 = time.perf_counter()
        async with durable.Engine(dsn, schema=schema, metrics=False):
            await asyncio.wait_for(finished.wait(), timeout=max(120.0, n / 50))
            elapsed = time.perf_counter() - t0
    finally:
        detach()
    return n / elapsed


async def main() -> dict[str, Any]:
    async with bench_schema("scale") as (dsn, schema):
        conn = await connect(dsn, schema=schema, timeout=30)
        try:
            t0 = time.perf_counter()
            await conn.execute(FILL_FINISHED, {"n": FINISHED})
            progress(f"{FINISHED} finished runs inserted in {time.perf_counter() - t0:.1f} s")
            figures: dict[str, Any] = {"finished_runs": FINISHED}
            for size in (SMALL, BACKLOG):
                await conn.execute("DELETE FROM durable_runs WHERE status <> 'completed'")
                await conn.execute(FILL_PENDING, {"workflow": WORKFLOW, "n": size})
                label = "1k" if size == SMALL else f"{size // 1000}k"
                figures[f"claim_ms_{label}_backlog"] = round(await claim_ms(conn), 3)
                progress(f"backlog {size}: one claim of 50 in {figures[f'claim_ms_{label}_backlog']} ms")
                rate = await drain(dsn, schema, size)
                figures[f"drain_wf_per_s_{label}"] = round(rate, 1)
                progress(f"backlog {size}: drained at {rate:.0f} wf/s")
            big = f"{BACKLOG // 1000}k"
            figures[f"claim_ratio_{big}"] = round(figures[f"claim_ms_{big}_backlog"] / figures["claim_ms_1k_backlog"], 3)
            figures[f"backlog_drain_ratio_{big}"] = round(figures[f"drain_wf_per_s_{big}"] / figures["drain_wf_per_s_1k"], 3)
            return figures
        finally:
            await conn.close()


if __name__ == "__main__":
    run(main)
