"""Schedules: ``BENCH_SCHEDULES`` schedules (default 1,000) firing every second on one
dispatcher for ``BENCH_SECONDS`` (default 30). ``python -m bench.schedules``.

The schedules are created by a client engine, then one executing engine (the dispatcher)
opens and fires them. Their runs go to a queue the dispatcher does not serve
(``BENCH_EXECUTE=1``: to its own queue, executed too), so the figures are the firing
path's: lock the due rows, start one run per tick through ``durable_start_run``, advance
the rows. Figures, over the ticks of the measured window (after ``BENCH_WARMUP_S``):

* ``fire_lag_p50_ms`` / ``fire_lag_p99_ms``: tick time -> the ``run.started`` hook of its
  run in the dispatcher (emitted right after the firing round committed), same host clock;
* ``missed``: ticks of the window without a run;
* ``duplicates``: runs of the schedules' workflow beyond one per tick (over the whole run);
* ``idle_queries_per_s``: statements of the schedule loop per second while every schedule
  is paused (``BENCH_IDLE_S``, default 20), counted by the loop (one probe per wake);
* ``rounds``, ``fired``: firing rounds and runs started in the window.

Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_SCHEDULES``,
``BENCH_SECONDS``, ``BENCH_WARMUP_S`` (3), ``BENCH_IDLE_S``, ``BENCH_EXECUTE`` (0).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import durable
from durable.observe import hooks
from durable.ticks import TickSpec, schedule_run_id

from bench.common import bench_schema, percentile, progress, run

N = int(os.environ.get("BENCH_SCHEDULES", "1000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
WARMUP_S = float(os.environ.get("BENCH_WARMUP_S", "3"))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "20"))
EXECUTE = os.environ.get("BENCH_EXECUTE", "0") == "1"
QUEUE = "bench_sched" if EXECUTE else "bench_sched_unserved"


@durable.workflow("bench.schedules.tick", queue=QUEUE)
async def tick(ctx: durable.Context, i: int) -> int:
    return i


async def main() -> dict[str, Any]:
    async with bench_schema("schedules") as (dsn, schema):
        async with durable.Engine(dsn, schema=schema, execute=False, metrics=False) as client:
            t0 = time.perf_counter()
            ids = [f"s{i:05d}" for i in range(N)]
            for i, sid in enumerate(ids):
                await client.schedules.create(sid, tick, i, every=timedelta(seconds=1), overlap="allow_all",
                                              paused=True)
            progress(f"created {N} schedules (paused) in {time.perf_counter() - t0:.1f} s")

            seen: dict[Any, float] = {}

            def on_started(ev: Any) -> None:
                seen.setdefault(ev["run_id"], time.time())

            off = hooks.on("run.started", on_started)
            try:
                async with durable.Engine(dsn, schema=schema, queues=("bench_sched",), metrics=False) as dispatcher:
                    assert dispatcher.scheduler is not None
                    # resume them all (each from its next tick) now that the dispatcher listens
                    resumed = datetime.now(UTC)
                    for sid in ids:
                        await client.schedules.resume(sid)
                    start = datetime.now(UTC)
                    progress(f"{N} schedules firing every second; measuring {SECONDS:.0f} s after "
                             f"{WARMUP_S:.0f} s of warm-up")
                    r0 = dispatcher.scheduler.rounds
                    await asyncio.sleep(WARMUP_S + SECONDS + 1.5)
                    rounds = dispatcher.scheduler.rounds - r0
                    for sid in ids:
                        await client.schedules.pause(sid)
                    end = datetime.now(UTC)
                    await asyncio.sleep(1.0)
                    progress(f"paused all; counting the schedule loop's statements for {IDLE_S:.0f} s")
                    p0 = dispatcher.scheduler.probes
                    r1 = dispatcher.scheduler.rounds
                    await asyncio.sleep(IDLE_S)
                    idle = (dispatcher.scheduler.probes - p0) + 3 * (dispatcher.scheduler.rounds - r1)
            finally:
                off()

            window_from = start + timedelta(seconds=WARMUP_S)
            window_to = window_from + timedelta(seconds=SECONDS)
            spec = TickSpec.parse(None, timedelta(seconds=1))
            ticks = spec.between(window_from, window_to, 100_000)
            lags: list[float] = []
            missed = 0
            all_ticks = spec.between(resumed - timedelta(seconds=2), end + timedelta(seconds=5), 1_000_000)
            async with client.pool.connection() as conn:  # type: ignore[union-attr]
                cur = await conn.execute("SELECT id FROM durable_runs WHERE workflow = 'bench.schedules.tick'")
                runs = {r[0] for r in await cur.fetchall()}
            matched = 0
            for sid in ids:
                for t in all_ticks:
                    if schedule_run_id(sid, t) in runs:
                        matched += 1
                for t in ticks:
                    rid = schedule_run_id(sid, t)
                    if rid not in runs:
                        missed += 1
                    elif rid in seen:
                        lags.append((seen[rid] - t.timestamp()) * 1000)
            progress(f"{len(ticks)} ticks x {N} schedules in the window: {len(lags)} runs timed, {missed} missed; "
                     f"{rounds} firing rounds")
    return {
        "schedules": N, "seconds": SECONDS,
        "fire_lag_p50_ms": round(percentile(lags, 50), 1), "fire_lag_p99_ms": round(percentile(lags, 99), 1),
        "missed": missed, "duplicates": len(runs) - matched,
        "idle_queries_per_s": round(idle / IDLE_S, 3),
        "rounds": rounds, "fired": len(lags), "executed": EXECUTE,
    }


if __name__ == "__main__":
    run(main)
