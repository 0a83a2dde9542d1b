"""Workflows of the registry tests (tests/integration/test_registry.py,
tests/procs/test_registry_procs.py): a typed workflow on its own queue that a pure client,
which never imports this module, starts by name."""

from __future__ import annotations

from pydantic import BaseModel, Field

import durable


class Order(BaseModel):
    sku: str
    qty: int = Field(ge=1)
    note: str | None = None


class Receipt(BaseModel):
    sku: str
    total: int


@durable.step
def price(order: Order) -> Receipt:
    return Receipt(sku=order.sku, total=order.qty * 250)


@durable.workflow("registry.checkout", queue="registry", execution_timeout=3600)
async def checkout(ctx: durable.Context, order: Order) -> Receipt:
    return await ctx.step(price, order)


@durable.workflow("registry.ping", queue="registry")
async def ping(ctx: durable.Context) -> str:
    return "pong"
