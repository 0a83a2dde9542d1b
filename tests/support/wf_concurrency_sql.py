"""Workflows for the SQL concurrency regression tests (test_concurrency_sql.py)."""
from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

import durable

# in-process state shared with the tests
ATTEMPTS: dict[str, int] = {}
RELEASE: dict[str, asyncio.Event] = {}


@durable.step
async def hold(tag: str) -> str:
    """Sits until the test sets RELEASE[tag] (or 30 s pass): keeps its run leased here."""
    ev = RELEASE.setdefault(tag, asyncio.Event())
    try:
        await asyncio.wait_for(ev.wait(), 30)
    except asyncio.TimeoutError:
        pass
    return tag


@durable.workflow("csql.collect", version=1)
async def collect(ctx: durable.Context, n: int) -> list[Any]:
    """Waits for ``n`` signals 's' and returns their payloads."""
    return [await ctx.wait_signal("s") for _ in range(n)]


@durable.workflow("csql.waiter", version=1)
async def waiter(ctx: durable.Context) -> Any:
    return await ctx.wait_signal("s")


@durable.workflow("csql.pinger", version=1)
async def pinger(ctx: durable.Context, i: int) -> int:
    """A child that signals its parent at once."""
    await ctx.signal(ctx.parent_run_id, "done", i)
    return i


@durable.workflow("csql.fan_in", version=1)
async def fan_in(ctx: durable.Context, n: int) -> list[Any]:
    """Starts ``n`` pingers in one transaction, then waits for ``n`` 'done' signals."""
    await ctx.start_children(pinger, list(range(n)), key=str)
    return sorted([await ctx.wait_signal("done") for _ in range(n)])


@durable.workflow("csql.busy", version=1)
async def busy(ctx: durable.Context, tag: str) -> str:
    return await ctx.step(hold, tag)


@durable.workflow("csql.busy_tree", version=1)
async def busy_tree(ctx: durable.Context, n: int) -> int:
    """A parent whose ``n`` children each sit in a long step; the parent waits for them."""
    refs = await ctx.start_children(busy, [f"{ctx.run_id}-{i}" for i in range(n)], key=lambda t: t.rsplit("-", 1)[1])
    await ctx.gather(refs)
    return n


class FlakySpec(BaseModel):
    tag: str


@durable.workflow("csql.flaky_waiter", version=1)
async def flaky_waiter(ctx: durable.Context, spec: FlakySpec) -> Any:
    """Fails on its first attempt; later attempts wait for a signal 's'."""
    ATTEMPTS[spec.tag] = ATTEMPTS.get(spec.tag, 0) + 1
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return await ctx.wait_signal("s")


@durable.workflow("csql.retry_parent", version=1)
async def retry_parent(ctx: durable.Context, tag: str) -> Any:
    """Starts a flaky child with an hour-long retry backoff and waits for it."""
    ref = await ctx.start_child(flaky_waiter, FlakySpec(tag=tag), key="c",
                                retry=durable.RetryPolicy(initial_interval=3600, max_interval=7200,
                                                          max_attempts=3))
    return await ctx.wait(ref)
