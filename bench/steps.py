"""Step throughput and overhead: ``python -m bench.steps``.

* sequential one-step workflows: start -> result, one after another, in one process
  (start, execute and wait all in-process): workflows per second, p50/p99 latency;
* per-step overhead: latency of a 100-step workflow minus that of a 1-step one, / 99;
* commits per one-step workflow, counted client-side (every pooled statement is one
  autocommit transaction).

Each figure is the median of 3 runs. Last line: JSON with ``workflows_per_s``, ``p50_ms``,
``p99_ms``, ``per_step_ms``, ``commits_per_workflow``.
Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_N`` (one-step workflows
per run, default 2000), ``BENCH_LONG`` (100-step workflows per run, default 20).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import durable
from bench.common import StatementCounter, bench_schema, median_of, percentile, progress, run

N_ONE = int(os.environ.get("BENCH_N", "2000"))
N_LONG = int(os.environ.get("BENCH_LONG", "20"))
STEPS = 100
RUNS = 3


@durable.step("bench.noop")
async def noop(i: int) -> int:
    return i


@durable.workflow("bench.steps.one")
async def one_step(ctx: durable.Context, i: int) -> int:
    return await ctx.step(noop, i)


@durable.workflow("bench.steps.many")
async def many_steps(ctx: durable.Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step(noop, i)
    return total


async def _latencies(engine: durable.Engine, wf: Any, inputs: list[int]) -> tuple[list[float], float]:
    lat: list[float] = []
    t_all = time.perf_counter()
    for x in inputs:
        t0 = time.perf_counter()
        h = await engine.start(wf, x)
        await h.result(timeout=60)
        lat.append(time.perf_counter() - t0)
    return lat, time.perf_counter() - t_all


async def main() -> dict[str, Any]:
    async with bench_schema("steps") as (dsn, schema):
        async with durable.Engine(dsn, schema=schema) as engine:
            progress("warm-up")
            await _latencies(engine, one_step, list(range(200)))
            await _latencies(engine, many_steps, [STEPS] * 3)

            with StatementCounter() as counter:
                await _latencies(engine, one_step, list(range(100)))
            per_wf = counter.total / 100
            progress(f"statements (= commits) per one-step workflow: {per_wf:.2f}")
            for q, n in sorted(counter.by_sql.items(), key=lambda kv: -kv[1]):
                progress(f"  {n / 100:5.2f}  {q}")

            async def one_run(i: int) -> dict[str, float]:
                lat, total = await _latencies(engine, one_step, list(range(N_ONE)))
                return {"workflows_per_s": N_ONE / total, "p50_ms": percentile(lat, 50) * 1e3,
                        "p99_ms": percentile(lat, 99) * 1e3}

            progress(f"sequential one-step workflows, {N_ONE} per run")
            seq = await median_of(RUNS, one_run, label="one-step")

            async def long_run(i: int) -> dict[str, float]:
                short, _ = await _latencies(engine, many_steps, [1] * N_LONG)
                long, _ = await _latencies(engine, many_steps, [STEPS] * N_LONG)
                t1, t100 = statistics.median(short), statistics.median(long)
                return {"wf_1_ms": t1 * 1e3, "wf_100_ms": t100 * 1e3,
                        "per_step_ms": (t100 - t1) / (STEPS - 1) * 1e3}

            progress(f"{STEPS}-step vs 1-step workflows, {N_LONG} each per run")
            steps = await median_of(RUNS, long_run, label="100-step")
    return {
        "workflows_per_s": round(seq["workflows_per_s"], 1),
        "p50_ms": round(seq["p50_ms"], 3),
        "p99_ms": round(seq["p99_ms"], 3),
        "per_step_ms": round(steps["per_step_ms"], 3),
        "commits_per_workflow": round(per_wf, 2),
    }


if __name__ == "__main__":
    run(main)
