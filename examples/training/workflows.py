"""The training session's patterns (seed 004) as durable workflows."""

from __future__ import annotations

from typing import Any

import durable
from durable import ApplicationError, ChildFailedError, Context

from .._common import bind

NO_RETRY = durable.RetryPolicy(max_attempts=1)


@durable.step("examples.training.work", retry=NO_RETRY)
def work(item: dict) -> dict:
    if item.get("fail"):
        raise ApplicationError(f"item {item['id']} cannot be processed", type="ItemError", non_retryable=True)
    return {"id": item["id"], "value": item.get("value", 1) * 2}


@durable.workflow("examples.training.item")
async def process_item(ctx: Context, item: dict) -> dict:
    if item.get("delay_s"):
        await ctx.sleep(item["delay_s"])
    return await ctx.step(work, item)


def _items(n: int, **extra: Any) -> list[dict]:
    return [{"id": f"item-{i}", "value": i, **extra} for i in range(n)]


# --- batches with a durable sleep between them ---------------------------------------------

@durable.workflow("examples.training.batches")
async def batches(ctx: Context, spec: dict) -> dict:
    items, size = spec["items"], spec["batch_size"]
    results: list[dict] = []
    for start in range(0, len(items), size):
        results += await ctx.gather(await ctx.start_children(process_item, items[start:start + size],
                                                             key=lambda it: it["id"]))
        if start + size < len(items):
            await ctx.sleep(spec["pause_s"])  # durable: a restart here resumes the pause, not the batch
    return {"batches": -(-len(items) // size), "processed": len(results),
            "total": sum(r["value"] for r in results)}


# --- results streamed as children complete -------------------------------------------------

@durable.workflow("examples.training.streaming")
async def streaming(ctx: Context, items: list[dict]) -> dict:
    refs = await ctx.start_children(process_item, items, key=lambda it: it["id"])
    order, failed = [], []
    async for ref in ctx.as_completed(refs):
        try:
            order.append(ref.result()["id"])
            ctx.log.info("child %s completed", ref.run_id)
        except ChildFailedError as exc:
            failed.append(exc.message)
    return {"completion_order": order, "failed": len(failed)}


# --- partial failure with compensation over a threshold ------------------------------------

@durable.workflow("examples.training.rollback")
async def rollback(ctx: Context, result: dict) -> str:
    return await ctx.step(lambda rid: f"rolled back {rid}", result["id"], name="examples.training.undo")


@durable.workflow("examples.training.resilient")
async def resilient(ctx: Context, spec: dict) -> dict:
    items = spec["items"]
    outcomes = await ctx.gather(await ctx.start_children(process_item, items, key=lambda it: it["id"]),
                                return_exceptions=True)
    ok = [o for o in outcomes if not isinstance(o, Exception)]
    failed = [it["id"] for it, o in zip(items, outcomes) if isinstance(o, Exception)]
    if len(failed) > len(items) * spec["max_failure_ratio"]:
        undone = await ctx.gather(await ctx.start_children(rollback, ok, key=lambda r: r["id"]),
                                  return_exceptions=True)
        raise ApplicationError(f"{len(failed)} of {len(items)} items failed; rolled back {len(undone)}",
                               type="TooManyFailures", details={"failed": failed, "rolled_back": undone})
    return {"succeeded": [o["id"] for o in ok], "failed": failed}


# --- a circuit breaker ----------------------------------------------------------------------

@durable.workflow("examples.training.circuit_breaker")
async def circuit_breaker(ctx: Context, spec: dict) -> dict:
    results, failures = [], 0
    items = spec["items"]
    for n, item in enumerate(items):
        if failures >= spec["max_failures"]:
            return {"results": results, "open": True, "skipped": [it["id"] for it in items[n:]]}
        try:
            results.append((await ctx.child(process_item, item, key=item["id"]))["id"])
            failures = 0  # a success closes the breaker again
        except ChildFailedError:
            failures += 1
    return {"results": results, "open": False, "skipped": []}


# --- bounded concurrency ---------------------------------------------------------------------

running: set[str] = set()
peak = 0


@durable.step("examples.training.enter")
def enter(item_id: str) -> int:
    global peak
    running.add(item_id)
    peak = max(peak, len(running))
    return len(running)


@durable.step("examples.training.leave")
def leave(item_id: str) -> None:
    running.discard(item_id)


@durable.workflow("examples.training.limited_item")
async def limited_item(ctx: Context, item: dict) -> int:
    await ctx.step(enter, item["id"])
    await ctx.sleep(0.05)
    await ctx.step(leave, item["id"])
    return item["value"]


@durable.workflow("examples.training.bounded")
async def bounded(ctx: Context, spec: dict) -> dict:
    results = await ctx.map(limited_item, spec["items"], concurrency=spec["max_concurrent"], key=lambda it: it["id"])
    return {"results": results}


async def main(engine: durable.Engine) -> dict[str, Any]:
    global peak
    bind(engine)

    async def run(wf: Any, value: Any) -> Any:
        return await (await engine.start(wf, value)).result(timeout=60)

    streamed = [{"id": "slow", "delay_s": 0.6}, {"id": "quick"}, {"id": "medium", "delay_s": 0.3}]
    too_many = [{"id": "a"}, {"id": "b", "fail": True}, {"id": "c", "fail": True}, {"id": "d"}]
    try:
        await run(resilient, {"items": too_many, "max_failure_ratio": 0.25})
        compensated: Any = "completed?!"
    except durable.RunFailedError as exc:
        compensated = {"error": exc.message, **(exc.error.get("details") or {})}
    flaky = [{"id": "p1"}, {"id": "f1", "fail": True}, {"id": "p2"}, {"id": "f2", "fail": True},
             {"id": "f3", "fail": True}, {"id": "f4", "fail": True}, {"id": "p3"}]
    peak = 0
    limited = await run(bounded, {"items": _items(8), "max_concurrent": 3})
    return {
        "batches with a durable sleep": await run(batches, {"items": _items(7), "batch_size": 3, "pause_s": 0.1}),
        "streaming results": await run(streaming, streamed),
        "partial failure under the threshold": await run(resilient, {"items": too_many, "max_failure_ratio": 0.5}),
        "partial failure over the threshold (compensated)": compensated,
        "circuit breaker": await run(circuit_breaker, {"items": flaky, "max_failures": 3}),
        "bounded concurrency": {**limited, "peak_concurrency": peak},
    }
