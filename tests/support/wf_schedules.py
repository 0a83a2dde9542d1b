"""Workflows the schedule tests start (importable by worker subprocesses)."""
from typing import Any

import durable


@durable.workflow("sched.tick")
async def tick(ctx: durable.Context, payload: Any) -> Any:
    return payload


@durable.workflow("sched.noinput")
async def noinput(ctx: durable.Context) -> str:
    return "ok"


@durable.workflow("sched.gated")
async def gated(ctx: durable.Context, payload: Any) -> Any:
    """Runs until signalled 'go' (an overlap: the next tick finds it running)."""
    await ctx.wait_signal("go")
    return payload
