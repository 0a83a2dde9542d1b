"""``durable demo``: a small but real workflow, shown as it runs.

A checkout of three orders: the parent validates the cart, fans out one child run per
order (reserve stock, charge the card, a durable wait for pickup, ship), collects them,
and sends a receipt. The card gateway times out once for one order; the step's retry
policy recovers. Progress lines come from hooks (``step.*``, ``child.*``), as events
happen. Works on the embedded PostgreSQL default or any DSN.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from typing import Any

from ..durations import duration
from ..engine import Engine
from ..errors import RunFailedError, RunTimeoutError
from ..observe import hooks
from ..retry import RetryPolicy
from ..runtime.context import Context
from ..runtime.registry import step, workflow
from ..store import connections as db
from ..store.embedded import default_data_dir
from .output import Out

ORDERS = ["A-1001", "A-1002", "A-1003"]
FLAKY_ORDER = "A-1002"
_attempts: dict[str, int] = {}  # charge attempts per (nonce, order): the gateway fails the first


def _amount(order: str) -> float:
    return round(10 + int(hashlib.sha256(order.encode()).hexdigest()[:4], 16) % 9000 / 100, 2)


@step("demo.validate_cart")
def validate_cart(orders: list[str]) -> int:
    if not orders:
        raise ValueError("the cart is empty")
    return len(orders)


@step("demo.reserve_stock")
async def reserve_stock(order: str) -> dict[str, Any]:
    return {"order": order, "warehouse": "north" if int(order[-1]) % 2 else "south"}


@step("demo.charge_card", retry=RetryPolicy(initial_interval=0.3, backoff=2.0, max_attempts=4))
async def charge_card(order: str, nonce: str) -> dict[str, Any]:
    key = f"{nonce}:{order}"
    _attempts[key] = _attempts.get(key, 0) + 1
    if order == FLAKY_ORDER and _attempts[key] == 1:
        raise ConnectionError("payment gateway timed out")
    return {"order": order, "amount": _amount(order), "charge_id": "ch_" + hashlib.sha1(key.encode()).hexdigest()[:10]}


@step("demo.ship")
async def ship(order: str, warehouse: str) -> str:
    return f"TRK-{warehouse[:1].upper()}{hashlib.sha1(order.encode()).hexdigest()[:8].upper()}"


@step("demo.send_receipt")
async def send_receipt(total: float, count: int) -> str:
    return f"receipt sent: {count} orders, {total:.2f} EUR"


@workflow("demo.fulfil_order")
async def fulfil_order(ctx: Context, item: dict[str, Any]) -> dict[str, Any]:
    stock = await ctx.step(reserve_stock, item["order"])
    charge = await ctx.step(charge_card, item["order"], item["nonce"])
    await ctx.sleep(0.2)  # a durable timer: waiting for the courier's pickup slot
    tracking = await ctx.step(ship, item["order"], stock["warehouse"])
    return {"order": item["order"], "amount": charge["amount"], "tracking": tracking}


@workflow("demo.checkout")
async def checkout(ctx: Context, cart: dict[str, Any]) -> dict[str, Any]:
    count = await ctx.step(validate_cart, cart["orders"])
    refs = await ctx.start_children(fulfil_order, [{"order": o, "nonce": cart["nonce"]} for o in cart["orders"]],
                                    key=lambda item: item["order"])
    shipments = await ctx.gather(refs)
    total = round(sum(s["amount"] for s in shipments), 2)
    receipt = await ctx.step(send_receipt, total, count)
    return {"orders": count, "total": total, "shipments": shipments, "receipt": receipt}


class _Progress:
    """Prints hook events of one demo run tree as they happen."""

    def __init__(self, out: Out, orders: list[str]) -> None:
        self.out = out
        self.orders = orders
        self.parent: uuid.UUID | None = None
        self.labels: dict[uuid.UUID, str] = {}
        self.t0 = time.monotonic()

    def who(self, run_id: Any) -> str | None:
        if run_id == self.parent:
            return "checkout"
        return self.labels.get(run_id)

    def line(self, mark: str, style: str, who: str, text: str) -> None:
        c = self.out.c
        self.out.print(f"  {c(f'{time.monotonic() - self.t0:5.2f}s', 'dim')}  {c(mark, style)} "
                       f"{c(who.ljust(14), 'bold')} {text}")

    def __call__(self, ev: hooks.HookEvent) -> None:
        if ev.name == "child.started" and ev["parent_run_id"] == self.parent:
            label = f"order {self.orders[len(self.labels)]}" if len(self.labels) < len(self.orders) else "child"
            self.labels[ev["child_run_id"]] = label
            self.line("→", "cyan", "checkout", f"started child run for {label} ({ev['child_run_id']})")
            return
        who = self.who(ev.get("run_id") or ev.get("parent_run_id"))
        if who is None:
            return
        step_name = str(ev.get("step", "")).removeprefix("demo.")
        if ev.name == "step.completed":
            again = f" (attempt {ev['attempt']})" if ev["attempt"] > 1 else ""
            self.line("✓", "green", who, f"{step_name}{again}  {self.out.c(duration(ev['duration_s']), 'dim')}")
        elif ev.name == "step.retried":
            self.line("↻", "yellow", who, f"{step_name} attempt {ev['attempt']} failed ({ev['error_type']}); "
                                          f"retrying in {duration(ev['delay_s'])}")
        elif ev.name == "step.failed":
            self.line("✗", "red", who, f"{step_name} failed ({ev['error_type']})")
        elif ev.name == "child.completed":
            self.line("←", "green", who, f"{self.labels.get(ev['child_run_id'], 'child')} completed")
        elif ev.name in ("child.failed", "child.cancelled"):
            self.line("←", "red", who, f"{self.labels.get(ev['child_run_id'], 'child')} {ev.name.split('.')[1]}")


async def run_demo(dsn: str | None, schema: str | None, out: Out, *, connect_timeout: float = 10.0,
                   timeout: float = 120.0) -> int:
    """Run the demo; returns a CLI exit code (0 completed, 1 failed, 5 timed out)."""
    c = out.c
    out.print(c("durable demo", "bold") + f": a checkout of {len(ORDERS)} orders — steps, one child run per "
                                          "order, a retry that recovers")
    if dsn is None and not os.environ.get("DURABLE_DSN"):
        out.print(c(f"  using embedded PostgreSQL in {default_data_dir()} (its first start takes a few seconds)",
                    "dim"))
    progress = _Progress(out, ORDERS)
    detach = hooks.on("*", progress)
    try:
        async with Engine(dsn, schema=schema, connect_timeout_s=connect_timeout) as engine:
            out.print(c(f"  database: {db.describe_dsn(engine.dsn)}, schema {engine.settings.schema_name}", "dim"))
            started = time.monotonic()
            progress.t0 = started
            cart = {"orders": ORDERS, "nonce": uuid.uuid4().hex}
            handle = await engine.start(checkout, cart)
            progress.parent = handle.run_id
            out.print(f"  run {c(str(handle.run_id), 'bold')} (demo.checkout)")
            try:
                result = await handle.result(timeout=timeout)
            except RunFailedError as exc:
                out.print(c(f"✗ the run failed: {exc}", "red"))
                return 1
            except RunTimeoutError:
                out.print(c(f"✗ no result within {timeout:.0f} s", "red"))
                return 5
            elapsed = time.monotonic() - started
    finally:
        detach()
    out.print(c(f"✓ completed in {elapsed:.2f} s", "green+bold"))
    for s in result["shipments"]:
        out.print(f"  {s['order']}  {s['amount']:>7.2f} EUR  {s['tracking']}")
    out.print(f"  total {result['total']:.2f} EUR — {result['receipt']}")
    flags = (" --dsn …" if dsn else "") + (f" --schema {schema}" if schema else "")
    out.print(c(f"look closer: durable{flags} show {handle.run_id}   ·   durable{flags} tree {handle.run_id}", "dim"))
    return 0
