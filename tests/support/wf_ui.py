"""Workflows for the web console's tests (tests/integration/test_ui_routes.py)."""
from __future__ import annotations

from typing import Any

import durable
from durable import ApplicationError, Context


@durable.workflow("ui.inbox")
async def inbox(ctx: Context, note: Any) -> Any:
    await ctx.step(lambda: "ready", name="ui.prepare")
    return {"got": await ctx.wait_signal("go"), "note": note}


@durable.workflow("ui.fail")
async def fail(ctx: Context, message: str) -> None:
    await ctx.step(lambda: None, name="ui.before")
    raise ApplicationError(message, type="Declined", non_retryable=True)


@durable.workflow("ui.leaf")
async def leaf(ctx: Context, n: int) -> int:
    return n


@durable.workflow("ui.mid")
async def mid(ctx: Context, n: int) -> int:
    refs = await ctx.start_children(leaf, list(range(n)), key=lambda i: f"leaf-{i:03d}")
    return sum(await ctx.gather(refs))


@durable.workflow("ui.top")
async def top(ctx: Context, n: int) -> int:
    return await ctx.child(mid, n, key="mid")


@durable.workflow("ui.chain")
async def chain(ctx: Context, round: int) -> Any:
    await ctx.child(leaf, round, key=f"round-{round}")
    if round < 1:
        ctx.continue_as_new(round + 1)
    return await ctx.wait_signal("go")
