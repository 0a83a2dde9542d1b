"""Workflows for tests/procs/test_metrics_procs.py: executed by a dispatcher subprocess,
started by a pure client (``Engine(execute=False)``) in the test process."""

from __future__ import annotations

import durable


@durable.step
async def add_one(n: int) -> int:
    return n + 1


@durable.workflow("metrics.one")
async def one(ctx: durable.Context, n: int) -> int:
    return await ctx.step(add_one, n)


@durable.workflow("metrics.child")
async def child(ctx: durable.Context, n: int) -> int:
    return await ctx.step(add_one, n)


@durable.workflow("metrics.parent")
async def parent(ctx: durable.Context, n: int) -> int:
    refs = await ctx.start_children(child, list(range(n)))
    return sum(await ctx.gather(refs))


@durable.workflow("metrics.waits")
async def waits(ctx: durable.Context) -> str:
    """Suspends until signalled (a test cancels it instead)."""
    return str(await ctx.wait_signal("go"))


@durable.workflow("metrics.idle")
async def idle(ctx: durable.Context) -> None:
    """Registered, never started: its series must exist at 0 anyway."""


@durable.step
async def dawdle(seconds: float) -> float:
    import asyncio

    await asyncio.sleep(seconds)
    return seconds


@durable.workflow("metrics.busy")
async def busy(ctx: durable.Context, seconds: float) -> float:
    """One slow step: running (holding its lease) when a test cancels it."""
    return await ctx.step(dawdle, seconds)
