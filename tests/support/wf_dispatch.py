"""Workflows executed by dispatcher subprocesses in tests/procs/test_dispatcher*.py and the
throughput bench.

``record`` appends one line per step execution to ``$WF_DISPATCH_LOG/<pid>.log``: the run,
the step index, the executing process, the lease token it held, and the step's start and
end on the machine-wide monotonic clock, so a test can check that no two executions of a
run overlapped and that every step ran exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import durable


def _log_path() -> str | None:
    folder = os.environ.get("WF_DISPATCH_LOG")
    return os.path.join(folder, f"{os.getpid()}.log") if folder else None


@durable.step
async def record(run_id: str, index: int, token: int | None, owner: str, sleep_s: float) -> int:
    started = time.monotonic()
    if sleep_s:
        await asyncio.sleep(sleep_s)
    path = _log_path()
    if path:
        line = json.dumps({"run": run_id, "step": index, "token": token, "owner": owner, "pid": os.getpid(),
                           "t0": started, "t1": time.monotonic()})
        with open(path, "a") as f:
            f.write(line + "\n")
    return index


@durable.workflow("dispatch.multi")
async def multi(ctx: durable.Context, spec: dict) -> int:
    """``spec``: {"steps": n, "sleep": seconds per step}; returns the sum of step indexes."""
    total = 0
    for i in range(spec["steps"]):
        ex = ctx._ex  # the current execution: its lease token and process, for the overlap check
        total += await ctx.step(record, str(ctx.run_id), i, ex.journal.token, ex.host.owner, spec.get("sleep", 0.0))
    return total


@durable.step
async def noop(n: int) -> int:
    return n


@durable.workflow("dispatch.one")
async def one(ctx: durable.Context, n: int) -> int:
    """One step: the throughput benchmark's unit of work."""
    return await ctx.step(noop, n)


@durable.step
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@durable.workflow("dispatch.nap")
async def napper(ctx: durable.Context, seconds: float) -> float:
    """One step that sleeps: keeps runs in flight (peak memory measurement)."""
    return await ctx.step(nap, seconds)
