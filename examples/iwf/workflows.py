"""The iWF parent-child pattern (seed 000) as durable workflows.

Option 1: each child signals its parent on a dynamic channel (``child-done-<key>``)
when it finishes; child ids are idempotent (derived from the parent and the key, like
iWF's requestId + ignoreAlreadyStarted). Option 2: a refund waits on its invoices with
``ctx.wait_run``; invoices are independent runs, refunds overlap on them (M:N), and
each waiting refund is a suspended row, woken when an invoice finishes — no polling."""

from __future__ import annotations

import asyncio
from typing import Any

import durable
from durable import Context, ParentClosePolicy

from .._common import bind, send_signal

# --- option 1: the child signals its parent on completion ----------------------------------

@durable.workflow("examples.iwf.notifying_child")
async def notifying_child(ctx: Context, task: dict) -> int:
    value = await ctx.step(lambda n: n * n, task["n"], name="examples.iwf.square")
    await ctx.step(send_signal, str(ctx.parent_run_id), f"child-done-{task['key']}", {"value": value},
                   f"{ctx.run_id}:done")
    return value


@durable.workflow("examples.iwf.signal_parent")
async def signal_parent(ctx: Context, numbers: list[int]) -> dict:
    tasks = [{"key": f"n{n}", "n": n} for n in numbers]
    refs = await ctx.start_children(notifying_child, tasks, key=lambda t: t["key"],
                                    parent_close=ParentClosePolicy.ABANDON)
    values = {t["key"]: (await ctx.wait_signal(f"child-done-{t['key']}", timeout=60))["value"] for t in tasks}
    return {"values": values, "children": [str(r.run_id) for r in refs]}


# --- option 2: M:N, refunds waiting on overlapping invoices --------------------------------

@durable.workflow("examples.iwf.invoice")
async def invoice(ctx: Context, spec: dict) -> dict:
    payment = await ctx.wait_signal("paid", timeout=3600)
    return {"invoice": spec["invoice"], "amount": payment["amount"]}


@durable.step("examples.iwf.issue_refund")
def issue_refund(refund_id: str, total: float) -> str:
    return f"{refund_id}: refunded {total:.2f}"


@durable.workflow("examples.iwf.refund")
async def refund(ctx: Context, spec: dict) -> dict:
    invoices = [await ctx.wait_run(run_id) for run_id in spec["invoice_runs"]]
    total = sum(i["amount"] for i in invoices)
    return {"invoices": [i["invoice"] for i in invoices], "receipt": await ctx.step(issue_refund, spec["refund"], total)}


async def _settled(handle: durable.RunHandle) -> str:
    """The run's status once it has reached its wait (only to show it: a waiting run is a
    suspended row holding no lease)."""
    for _ in range(500):
        status = await handle.status()
        if status != "running" and status != "pending":
            return status
        await asyncio.sleep(0.02)
    return status


async def main(engine: durable.Engine) -> dict[str, Any]:
    bind(engine)
    option1 = await (await engine.start(signal_parent, [2, 3, 4])).result(timeout=60)
    children_done = [await engine.get_handle(c).result(timeout=60) for c in option1.pop("children")]

    inv = {n: await engine.start(invoice, {"invoice": f"INV-{n}"}) for n in (1, 2, 3, 4)}
    refunds = {
        "R-A": await engine.start(refund, {"refund": "R-A", "invoice_runs": [str(inv[n].run_id) for n in (1, 2, 3)]}),
        "R-B": await engine.start(refund, {"refund": "R-B", "invoice_runs": [str(inv[n].run_id) for n in (2, 3, 4)]}),
    }
    before = {name: await _settled(h) for name, h in refunds.items()}
    for n, h in inv.items():  # pay the invoices: each completion wakes every refund waiting on it
        await h.signal("paid", {"amount": 10.0 * n})
    return {
        "option 1: children signal completion": {**option1, "children_results": children_done},
        "option 2: refunds before any invoice was paid": before,
        "option 2: refunds (M:N)": {name: await h.result(timeout=60) for name, h in refunds.items()},
    }
