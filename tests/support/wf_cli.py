"""Workflows for the CLI and retention tests (importable: `durable start -m tests.wf_cli`)."""
from __future__ import annotations

from pydantic import BaseModel

import durable
from durable import ApplicationError, CancellationRequested, Context

CLEANUPS: list[str] = []


@durable.workflow("cli.echo")
async def echo(ctx: Context, value: dict) -> dict:
    return await ctx.step(lambda v: {**v, "echoed": True}, value, name="cli.echo_step")


@durable.workflow("cli.fail")
async def fail(ctx: Context, message: str) -> None:
    await ctx.step(lambda: None, name="cli.before_failing")
    raise ApplicationError(message, type="Boom")


@durable.workflow("cli.leaf")
async def leaf(ctx: Context, n: int) -> int:
    return await ctx.step(lambda x: x * x, n, name="cli.square")


@durable.workflow("cli.family")
async def family(ctx: Context, n: int) -> int:
    return sum(await ctx.gather(await ctx.start_children(leaf, list(range(n)))))


@durable.workflow("cli.family_then_signal")
async def family_then_signal(ctx: Context, n: int) -> dict:
    total = sum(await ctx.gather(await ctx.start_children(leaf, list(range(n)))))
    go = await ctx.wait_signal("go")
    return {"sum": total, "go": go}


@durable.workflow("cli.inbox")
async def inbox(ctx: Context, name: str) -> dict:
    return {"got": await ctx.wait_signal(name)}


@durable.workflow("cli.loop")
async def loop(ctx: Context, count: int) -> int:
    """Each link runs one leaf child, then continues as new until count reaches 0."""
    value = await ctx.child(leaf, count)
    if count > 0:
        ctx.continue_as_new(count - 1)
    return value


@durable.workflow("cli.parent_of_loop")
async def parent_of_loop(ctx: Context, count: int) -> int:
    return await ctx.child(loop, count)


@durable.workflow("cli.sleeper")
async def sleeper(ctx: Context, seconds: float) -> str:
    await ctx.child(leaf, 1)
    await ctx.start_child(sleeper_child, seconds)
    await ctx.sleep(seconds)
    return "woke"


@durable.workflow("cli.sleeper_child")
async def sleeper_child(ctx: Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "woke"


@durable.workflow("cli.careful")
async def careful(ctx: Context, tag: str) -> str:
    try:
        await ctx.wait_signal("never")
    except CancellationRequested:
        await ctx.step(lambda t: CLEANUPS.append(t), tag, name="cli.cleanup")
        raise
    return "not cancelled"


class Receipt(BaseModel):
    order: str
    total: float


@durable.workflow("cli.receipt")
async def receipt(ctx: Context, order: str) -> Receipt:
    return Receipt(order=order, total=await ctx.step(lambda: 12.5, name="cli.price"))
