"""Workflows for tests/integration/test_concurrency_waits.py (wait_run on chains, late wakes, retry
hooks, step timeouts). Names are prefixed 'cwait.'."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import durable
from durable.errors import ChildFailedError

# in-process side effects the tests read
SYNC_LOG: list[tuple[str, str, float]] = []   # ('start'|'end', tag, time.monotonic())
STEP_DONE: dict[str, Callable[[int], Any]] = {}  # tag -> callback run when the round's step finishes


@durable.workflow("cwait.two_link")
async def two_link(ctx: durable.Context, link: int) -> dict:
    """The first link continues as new at once; the second waits for 'go' and returns."""
    if link == 0:
        ctx.continue_as_new(1)
    got = await ctx.wait_signal("go")
    return {"link": link, "run_id": str(ctx.run_id), "got": got}


@durable.workflow("cwait.wait_run")
async def wait_run(ctx: durable.Context, run_id: str) -> Any:
    return await ctx.wait_run(run_id)


@durable.workflow("cwait.fail_once_then_wait")
async def fail_once_then_wait(ctx: durable.Context, tag: str) -> dict:
    """Attempt 1 fails; attempt 2 waits for 'go' and returns its attempt and run id. (It
    takes an input: a child of a no-input workflow currently fails the parent with a
    NotNullViolation on durable_runs.input, a separate problem.)"""
    if ctx.attempt < 2:
        raise durable.ApplicationError(f"attempt {ctx.attempt} fails", type="Flaky")
    got = await ctx.wait_signal("go")
    return {"attempt": ctx.attempt, "run_id": str(ctx.run_id), "got": got}


@durable.workflow("cwait.retry_wait_parent")
async def retry_wait_parent(ctx: durable.Context) -> dict:
    return await ctx.child(fail_once_then_wait, "t", retry=durable.RetryPolicy(initial_interval=0.1, max_attempts=3))


@durable.workflow("cwait.flaky")
async def flaky(ctx: durable.Context, succeed_on: int) -> dict:
    if ctx.attempt < succeed_on:
        raise durable.ApplicationError(f"attempt {ctx.attempt} fails", type="Flaky")
    return {"attempt": ctx.attempt, "run_id": str(ctx.run_id)}


@durable.workflow("cwait.retry_parent")
async def retry_parent(ctx: durable.Context, succeed_on: int) -> Any:
    policy = durable.RetryPolicy(initial_interval=0.1, backoff=1.0, max_attempts=3)
    try:
        return await ctx.child(flaky, succeed_on, retry=policy)
    except ChildFailedError as exc:
        return {"failed": exc.type}


@durable.workflow("cwait.long_sleep")
async def long_sleep(ctx: durable.Context) -> str:
    await ctx.sleep(30)
    return "woke"


@durable.step("cwait.round_step")
async def round_step(tag: str, i: int) -> int:
    cb = STEP_DONE.get(tag)
    if cb is not None:
        cb(i)  # the test sends this round's signal right as the step finishes
    return i


@durable.workflow("cwait.step_then_signal")
async def step_then_signal(ctx: durable.Context, rounds: int) -> list:
    got = []
    for i in range(rounds):
        await ctx.step(round_step, str(ctx.run_id), i)
        got.append(await ctx.wait_signal(f"s{i}"))
    return got


def slow_sync(tag: str) -> str:
    """A sync step (runs in a thread) that outlives its 0.3 s timeout."""
    SYNC_LOG.append(("start", tag, time.monotonic()))
    time.sleep(1.0)
    SYNC_LOG.append(("end", tag, time.monotonic()))
    return tag


@durable.workflow("cwait.slow_sync")
async def slow_sync_flow(ctx: durable.Context, tag: str) -> str:
    return await ctx.step(slow_sync, tag, timeout=0.3,
                          retry=durable.RetryPolicy(max_attempts=2, initial_interval=0.01))


@durable.workflow("cwait.quick")
async def quick(ctx: durable.Context, n: int) -> int:
    await asyncio.sleep(0)
    return n
