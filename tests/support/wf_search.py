"""Workflows for the listing and search tests (tests/integration/test_search.py)."""
from __future__ import annotations

from typing import Any

import durable
from durable import Context, SearchAttributeError


@durable.workflow("search.order")
async def order(ctx: Context, customer: str) -> str:
    await ctx.set_attributes(customer=customer, tier=["gold", "eu"])
    got = await ctx.wait_signal("go")
    await ctx.set_attributes(stage="paid", amount=12.5)
    return f"{customer}:{got}"


@durable.workflow("search.bad_attrs")
async def bad_attrs(ctx: Context) -> str:
    try:
        await ctx.set_attributes(customer={"id": "c1"})
    except SearchAttributeError as exc:
        return str(exc)
    return "accepted"


@durable.workflow("search.leaf")
async def leaf(ctx: Context, n: int) -> int:
    if n % 10 == 3:
        raise durable.ApplicationError(f"item {n} declined", type="Declined", non_retryable=True)
    return n


@durable.workflow("search.fanout")
async def fanout(ctx: Context, n: int) -> Any:
    refs = await ctx.start_children(leaf, list(range(n)), key=lambda i: f"item-{i:03d}")
    extra = await ctx.start_child(leaf, 1, key="special")
    results = await ctx.gather([*refs, extra], return_exceptions=True)
    return sum(r for r in results if isinstance(r, int))
