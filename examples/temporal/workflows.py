"""Temporal's child-workflow pattern page (seed 002) as durable workflows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import durable
from durable import Context, ParentClosePolicy

from .._common import bind


@durable.workflow("examples.temporal.child")
async def child(ctx: Context, text: str) -> str:
    return await ctx.step(str.upper, text, name="examples.temporal.shout")


@durable.workflow("examples.temporal.sync_parent")
async def sync_parent(ctx: Context, text: str) -> str:
    """Synchronous child: start it and block until it completes."""
    result = await ctx.child(child, text)
    return f"Parent received: {result}"


@durable.workflow("examples.temporal.async_parent")
async def async_parent(ctx: Context, text: str) -> str:
    """Asynchronous child: start it, get its id, and go on without waiting."""
    ref = await ctx.start_child(child, text, parent_close=ParentClosePolicy.ABANDON)
    return str(ref.run_id)


@durable.workflow("examples.temporal.parallel_parent")
async def parallel_parent(ctx: Context, items: list[str]) -> str:
    """Parallel children: start all, wait for all, results in input order."""
    results = await ctx.gather(await ctx.start_children(child, items))
    return ", ".join(results)


@durable.workflow("examples.temporal.long_running")
async def long_running(ctx: Context, data: str) -> str:
    await ctx.sleep(0.3)
    return await ctx.step(lambda d: f"archived {d}", data, name="examples.temporal.archive")


@durable.workflow("examples.temporal.fire_and_forget")
async def fire_and_forget(ctx: Context, data: str) -> str:
    """Fire-and-forget: start_child returns once the child run exists (its row and the
    parent's child_started event commit together), so the parent may end at once; with
    ABANDON the child runs on."""
    ref = await ctx.start_child(long_running, data, parent_close=ParentClosePolicy.ABANDON)
    return str(ref.run_id)


class Order(BaseModel):
    id: str
    amount: float
    requires_approval: bool = False


@durable.workflow("examples.temporal.approval")
async def approval(ctx: Context, order: Order) -> bool:
    return await ctx.step(lambda amount: amount < 1000, order.amount, name="examples.temporal.decide")


@durable.workflow("examples.temporal.fulfilment")
async def fulfilment(ctx: Context, order: Order) -> str:
    return await ctx.step(lambda oid: f"Order {oid} fulfilled", order.id, name="examples.temporal.ship")


@durable.workflow("examples.temporal.conditional")
async def conditional(ctx: Context, order: Order) -> str:
    """Conditional children: approval only when the order needs it, then fulfilment."""
    if order.requires_approval:
        approved = await ctx.child(approval, order, key=f"approval-{order.id}")
        if not approved:
            return "Order rejected"
    return await ctx.child(fulfilment, order, key=f"fulfilment-{order.id}")


async def main(engine: durable.Engine) -> dict[str, Any]:
    bind(engine)

    async def run(wf: Any, value: Any) -> Any:
        return await (await engine.start(wf, value)).result(timeout=60)

    async_child = await run(async_parent, "async")
    ff_parent = await engine.start(fire_and_forget, "logs-2024")
    ff_child = await ff_parent.result(timeout=60)
    ff_child_status_when_parent_done = await engine.get_handle(ff_child).status()
    return {
        "synchronous child": await run(sync_parent, "hello"),
        "asynchronous child": {"child": async_child,
                               "child result": await engine.get_handle(async_child).result(timeout=60)},
        "parallel children": await run(parallel_parent, ["a", "b", "c"]),
        "fire-and-forget": {"parent": await ff_parent.status(),
                            "child when the parent ended": ff_child_status_when_parent_done,
                            "child result": await engine.get_handle(ff_child).result(timeout=60)},
        "conditional: small order": await run(conditional, Order(id="o-1", amount=50, requires_approval=True)),
        "conditional: big order": await run(conditional, Order(id="o-2", amount=5000, requires_approval=True)),
        "conditional: no approval needed": await run(conditional, Order(id="o-3", amount=5000)),
    }
