"""Cost of the Prometheus metrics on the hot path: ``python -m bench.metrics_overhead``.

Sequential one-step workflows (start -> result, one after another, all in one process),
with the metrics hook handler installed vs uninstalled, on one engine. Each run is
interleaved finely: CHUNKS slices of N/CHUNKS workflows alternating off/on (then on/off),
timed per side, so drift in the machine's load hits both sides alike; each figure is the
median of 3 runs.

It also times the metrics handler alone (no database): the six events one one-step
workflow emits, replayed in a tight loop, on vs off: ``handler_us_per_workflow``.

Last line: JSON with ``wf_per_s_on``, ``wf_per_s_off``, ``overhead_pct`` (the median of
the paired per-run (off - on) / off * 100; negative means within noise),
``handler_us_per_workflow``, ``events_per_workflow``.
Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_N`` (workflows per run,
default 1000).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

import durable
from bench.common import bench_schema, progress, run
from durable.observe import hooks, metrics

N = int(os.environ.get("BENCH_N", "1000"))
RUNS = 3
CHUNKS = 10


@durable.step("bench.metrics.noop")
async def noop(i: int) -> int:
    return i


@durable.workflow("bench.metrics.one")
async def one_step(ctx: durable.Context, i: int) -> int:
    return await ctx.step(noop, i)


async def _throughput(engine: durable.Engine, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        h = await engine.start(one_step, i)
        await h.result(timeout=60)
    return n / (time.perf_counter() - t0)


async def _events_per_workflow(engine: durable.Engine) -> float:
    count = 0

    def counter(event: hooks.HookEvent) -> None:
        nonlocal count
        count += 1

    detach = hooks.on("*", counter)
    try:
        await _throughput(engine, 50)
    finally:
        detach()
    return count / 50


def _handler_cost_us(loops: int = 20000) -> float:
    """Microseconds the metrics handler adds to one one-step workflow's events (CPU only)."""
    run_id = uuid.uuid4()
    wf = "bench.metrics.one"

    def one_workflow() -> None:
        hooks.emit("run.started", run_id=run_id, workflow=wf, queue="default", parent_run_id=None)
        hooks.emit("execution.started", run_id=run_id, workflow=wf)
        hooks.emit("run.resumed", run_id=run_id, workflow=wf, source="start", wake_latency_s=None)
        hooks.emit("step.completed", run_id=run_id, workflow=wf, step="bench.metrics.noop", attempt=1,
                   duration_s=0.0001)
        hooks.emit("run.completed", run_id=run_id, workflow=wf, queue="default", duration_s=0.002)
        hooks.emit("execution.ended", run_id=run_id, workflow=wf, reason="terminal")

    cost = {}
    for on in (False, True, False, True):
        metrics.install() if on else metrics.uninstall()
        t0 = time.perf_counter()
        for _ in range(loops):
            one_workflow()
        cost[on] = min(cost.get(on, float("inf")), (time.perf_counter() - t0) / loops * 1e6)
    metrics.install()
    return cost[True] - cost[False]


async def main() -> dict[str, Any]:
    async with bench_schema("metrics") as (dsn, schema):
        # metrics=False: the engine leaves the handler alone; this bench toggles it
        async with durable.Engine(dsn, schema=schema, metrics=False) as engine:
            progress("warm-up")
            metrics.install()
            await _throughput(engine, 200)
            events = await _events_per_workflow(engine)
            progress(f"hook events per one-step workflow: {events:.1f}")
            handler_us = _handler_cost_us()
            progress(f"metrics handler CPU per one-step workflow: {handler_us:.1f} us")
            results: dict[bool, list[float]] = {True: [], False: []}
            chunk = max(1, N // CHUNKS)
            for i in range(RUNS):
                seconds = {True: 0.0, False: 0.0}
                for c in range(CHUNKS):
                    for on in ((False, True) if c % 2 == 0 else (True, False)):
                        if on:
                            metrics.install()
                        else:
                            metrics.uninstall()
                        seconds[on] += chunk / await _throughput(engine, chunk)
                for on in (False, True):
                    results[on].append(chunk * CHUNKS / seconds[on])
                progress(f"run {i + 1}/{RUNS}: metrics off {results[False][-1]:.1f} wf/s, "
                         f"on {results[True][-1]:.1f} wf/s ({chunk * CHUNKS} workflows each)")
            metrics.install()
    on_rate = statistics.median(results[True])
    off_rate = statistics.median(results[False])
    overhead = statistics.median((off - on) / off * 100.0 for on, off in zip(results[True], results[False]))
    progress(f"median: on {on_rate:.1f} wf/s, off {off_rate:.1f} wf/s, paired overhead {overhead:.2f} %")
    return {"wf_per_s_on": round(on_rate, 1), "wf_per_s_off": round(off_rate, 1),
            "overhead_pct": round(overhead, 2), "handler_us_per_workflow": round(handler_us, 1),
            "events_per_workflow": round(events, 1), "n": N}


if __name__ == "__main__":
    run(main)
