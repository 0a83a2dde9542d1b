"""Workflows shared by the basic tests (importable by worker subprocesses)."""
import durable


@durable.step
async def add(a: int, b: int) -> int:
    return a + b


@durable.workflow("basic.add")
async def add_flow(ctx: durable.Context, n: int) -> int:
    x = await ctx.step(add, n, 1)
    return await ctx.step(add, x, 1)
