"""Parked runs are bounded by memory as well as by count: the estimate follows what parked
runs really hold (tracemalloc), and past max_parked_bytes the least recently parked runs
are evicted, then resume correctly by replay."""
from __future__ import annotations

import gc
import tracemalloc

import durable
from durable.runtime.parked import EVENT_BYTES, RUN_BYTES
from helpers import eventually, new_engine


@durable.step
async def blob(i: int, size: int) -> str:
    return f"{i}:" + "x" * size


@durable.workflow("parked.holder")
async def holder(ctx: durable.Context, spec: dict) -> int:
    """spec['steps'] steps whose results (spec['size'] bytes each) the workflow keeps, then a
    wait for signal 'go'."""
    kept = [await ctx.step(blob, i, spec["size"]) for i in range(spec["steps"])]
    await ctx.wait_signal("go")
    return sum(len(k) for k in kept)


async def test_the_estimate_follows_what_parked_runs_hold(db):
    """200 runs parked, each holding 8 step results of 2 KB: the estimate is within a
    third of the memory tracemalloc sees them take."""
    n, steps, size = 200, 8, 2000
    async with new_engine(db) as engine:
        warm = await engine.start(holder, {"steps": steps, "size": size})  # imports and caches warmed up
        await eventually(lambda: warm.run_id in engine.runs.parked, 10, what="a warm-up run parked")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            handles = [await engine.start(holder, {"steps": steps, "size": size}) for _ in range(n)]
            await eventually(lambda: len(engine.runs.parked) == n + 1, 30, what="every run parked")
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        real = sum(s.size_diff for s in after.compare_to(before, "filename"))
        estimate = sum(engine.runs.parked.get(h.run_id).memory_bytes for h in handles)  # type: ignore[union-attr]
        assert estimate == engine.runs.parked.bytes - engine.runs.parked.get(warm.run_id).memory_bytes  # type: ignore[union-attr]
        per_run_real, per_run_est = real / n, estimate / n
        assert 0.75 <= per_run_est / per_run_real <= 1.33, (
            f"a parked run holds {per_run_real:.0f} B, estimated {per_run_est:.0f} B "
            f"(RUN_BYTES={RUN_BYTES}, EVENT_BYTES={EVENT_BYTES})")
        for h in [warm, *handles]:
            await engine.signal(h.run_id, "go")
        assert {await h.result(timeout=30) for h in handles} == {steps * (size + 2) + sum(len(str(i)) - 1
                                                                                            for i in range(steps))}


async def test_past_the_byte_bound_the_oldest_parked_runs_are_evicted_and_resume_by_replay(db):
    """Each run holds about 4 x 20 KB; a 150 KB bound keeps only the newest few parked (the
    count bound, 10,000, is far away). Every run still completes: the evicted ones replay."""
    steps, size, n = 4, 20_000, 12
    bound = 150_000
    async with new_engine(db, max_parked_bytes=bound) as engine:
        handles = []
        for _ in range(n):
            handles.append(await engine.start(holder, {"steps": steps, "size": size}))
            await eventually(lambda: engine.runs.parked.get(handles[-1].run_id) is not None
                             or not engine.runs.has(handles[-1].run_id), 10, what="the run parked or evicted")
        assert engine.runs.parked.bytes <= bound
        assert 1 <= len(engine.runs.parked) < n
        kept = [h for h in handles if h.run_id in engine.runs.parked]
        assert kept == handles[-len(kept):], "the least recently parked runs go first"
        for h in handles:
            await engine.signal(h.run_id, "go")
        assert [await h.result(timeout=30) for h in handles] == [steps * (size + 2)] * n
