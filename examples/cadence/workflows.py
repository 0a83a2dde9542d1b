"""The Cadence example's patterns (seed 001) as durable workflows."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import durable
from durable import ApplicationError, CancellationRequested, ChildFailedError, Context, ParentClosePolicy

from .._common import bind, send_signal

cleaned_up: list[str] = []  # chunks whose cleanup step ran after a cancel request (for the demo output)


# --- a job split into chunks: one processor per chunk -------------------------------------

@durable.step("examples.cadence.process_chunk")
def process_chunk(items: list[str]) -> list[str]:
    return [item.strip().upper() for item in items]


@durable.step("examples.cadence.validate_data", retry=durable.RetryPolicy(max_attempts=1))
def validate_data(chunk_id: str, items: list[str]) -> int:
    bad = [i for i in items if not i]
    if bad:
        raise ApplicationError(f"chunk {chunk_id} has {len(bad)} empty item(s)", type="ValidationError",
                               non_retryable=True)
    return len(items)


@durable.step("examples.cadence.release_chunk")
def release_chunk(chunk_id: str) -> str:
    cleaned_up.append(chunk_id)
    return f"released {chunk_id}"


@durable.workflow("examples.cadence.chunk")
async def chunk_processor(ctx: Context, chunk: dict) -> dict:
    """Process then validate one chunk; on a cancel request, release it and stop."""
    try:
        processed = await ctx.step(process_chunk, chunk["items"])
        if chunk.get("review_s"):
            await ctx.sleep(chunk["review_s"])  # a slow manual review: where a cancel lands
        count = await ctx.step(validate_data, chunk["id"], processed)
        return {"chunk": chunk["id"], "count": count, "items": processed}
    except CancellationRequested:
        await ctx.step(release_chunk, chunk["id"])
        raise


@durable.workflow("examples.cadence.job")
async def job(ctx: Context, spec: dict) -> dict:
    """Split a job into chunks, one child per chunk; collect successes and failures."""
    chunks = [{"id": f"{spec['job_id']}-{i}", "items": items, "review_s": spec.get("review_s")}
              for i, items in enumerate(spec["chunks"])]
    refs = await ctx.start_children(chunk_processor, chunks, key=lambda c: c["id"],
                                    parent_close=ParentClosePolicy.REQUEST_CANCEL)
    outcomes = await ctx.gather(refs, return_exceptions=True)
    ok = [o for o in outcomes if not isinstance(o, Exception)]
    failed = [{"chunk": c["id"], "error": o.message} for c, o in zip(chunks, outcomes) if isinstance(o, Exception)]
    return {"job_id": spec["job_id"], "succeeded": [o["chunk"] for o in ok], "failed": failed,
            "items_processed": sum(o["count"] for o in ok)}


# --- fan-out: one child per item, success/failure statistics -------------------------------

@durable.step("examples.cadence.check_item", retry=durable.RetryPolicy(max_attempts=1))
def check_item(item: int) -> int:
    if item < 0:
        raise ApplicationError(f"item {item} is negative", type="ValidationError", non_retryable=True)
    return item


@durable.workflow("examples.cadence.item")
async def process_single_item(ctx: Context, item: int) -> int:
    value = await ctx.step(check_item, item)
    return await ctx.step(lambda v: v * 10, value, name="examples.cadence.transform")


@durable.workflow("examples.cadence.fan_out")
async def fan_out(ctx: Context, items: list[int]) -> dict:
    refs = await ctx.start_children(process_single_item, items)
    results = await ctx.gather(refs, return_exceptions=True)
    return {"total": len(items), "succeeded": sum(not isinstance(r, Exception) for r in results),
            "failed": sum(isinstance(r, ChildFailedError) for r in results),
            "results": [None if isinstance(r, Exception) else r for r in results]}


# --- fan-in: aggregate children's partial results in a step --------------------------------

@durable.workflow("examples.cadence.partial")
async def partial(ctx: Context, source: dict) -> dict:
    data = await ctx.step(lambda rows: sorted(rows), source["rows"], name="examples.cadence.load")
    return {"child_id": source["name"], "data": data, "count": len(data)}


@durable.step("examples.cadence.aggregate_results")
def aggregate_results(results: list[dict]) -> dict:
    return {"children": [r["child_id"] for r in results], "count": sum(r["count"] for r in results),
            "data": sorted(x for r in results for x in r["data"])}


@durable.workflow("examples.cadence.fan_in")
async def fan_in(ctx: Context, sources: list[dict]) -> dict:
    refs = await ctx.start_children(partial, sources, key=lambda s: s["name"])
    return await ctx.step(aggregate_results, await ctx.gather(refs))


# --- map-reduce: word counts -------------------------------------------------------------

@durable.workflow("examples.cadence.map_words")
async def map_words(ctx: Context, document: str) -> dict[str, int]:
    return await ctx.step(lambda text: dict(Counter(text.lower().split())), document,
                          name="examples.cadence.count_words")


@durable.step("examples.cadence.reduce_counts")
def reduce_counts(partials: list[dict[str, int]]) -> dict:
    total: Counter[str] = Counter()
    for p in partials:
        total.update(p)
    return {"words": sum(total.values()), "top": total.most_common(3)}


@durable.workflow("examples.cadence.map_reduce")
async def map_reduce(ctx: Context, documents: list[str]) -> dict:
    mapped = await ctx.gather(await ctx.start_children(map_words, documents))
    return await ctx.step(reduce_counts, mapped)


# --- scatter-gather: shards report back by signal ------------------------------------------

@durable.workflow("examples.cadence.shard")
async def shard(ctx: Context, task: dict) -> int:
    value = await ctx.step(lambda xs: sum(x * x for x in xs), task["values"], name="examples.cadence.sum_squares")
    await ctx.sleep(task["delay_s"])
    await ctx.step(send_signal, str(ctx.parent_run_id), "shard_result", {"shard": task["shard"], "value": value},
                   f"{ctx.run_id}:shard_result")
    return value


@durable.workflow("examples.cadence.scatter_gather")
async def scatter_gather(ctx: Context, shards: list[list[int]]) -> dict:
    tasks = [{"shard": i, "values": v, "delay_s": 0.05 * (len(shards) - i)} for i, v in enumerate(shards)]
    refs = await ctx.start_children(shard, tasks, key=lambda t: f"shard-{t['shard']}")
    arrived = [await ctx.wait_signal("shard_result", timeout=60) for _ in tasks]  # gather from the channel
    await ctx.gather(refs)  # join the shards so none is left running
    return {"arrival_order": [a["shard"] for a in arrived], "total": sum(a["value"] for a in arrived)}


# --- a three-level hierarchy: region -> store -> inventory ---------------------------------

STORES = {"US": ["nyc", "sfo"], "EU": ["ber", "par", "mad"], "APAC": ["syd"]}


@durable.step("examples.cadence.count_inventory")
def count_inventory(store: str) -> int:
    return sum(ord(c) for c in store) % 50 + 10


@durable.workflow("examples.cadence.store")
async def store_processor(ctx: Context, store: str) -> dict:
    return {"store": store, "units": await ctx.step(count_inventory, store)}


@durable.workflow("examples.cadence.region")
async def region_processor(ctx: Context, region: str) -> dict:
    stores = await ctx.gather(await ctx.start_children(store_processor, STORES[region], key=str))
    return {"region": region, "stores": len(stores), "units": sum(s["units"] for s in stores)}


@durable.workflow("examples.cadence.hierarchy")
async def hierarchy(ctx: Context, regions: list[str]) -> dict:
    results = await ctx.gather(await ctx.start_children(region_processor, regions, key=str))
    return {"regions": {r["region"]: r["units"] for r in results}, "units": sum(r["units"] for r in results)}


# --- running it ----------------------------------------------------------------------------

async def cancel_a_job(engine: durable.Engine) -> dict:
    """Start a job whose chunks sit in review, cancel it gracefully once its chunk runs
    exist, and show each chunk observing the request and cleaning up."""
    started: dict[Any, list] = {}
    ready = asyncio.Event()
    cleaned_up.clear()

    def on_child(ev: durable.hooks.HookEvent) -> None:
        started.setdefault(ev["parent_run_id"], []).append(ev["child_run_id"])
        if handle is not None and len(started.get(handle.run_id, [])) == 2:
            ready.set()

    handle = None
    detach = durable.hooks.on("child.started", on_child)
    try:
        handle = await engine.start(job, {"job_id": "job-slow", "chunks": [["a"], ["b"]], "review_s": 60})
        if len(started.get(handle.run_id, [])) == 2:
            ready.set()
        await asyncio.wait_for(ready.wait(), 30)
    finally:
        detach()
    await engine.cancel(handle.run_id, graceful=True)
    statuses = []
    for child in started[handle.run_id]:
        try:
            await engine.get_handle(child).result(timeout=30)
            statuses.append("completed")
        except durable.RunCancelledError:
            statuses.append("cancelled")
    try:
        await handle.result(timeout=30)
        job_status = "completed"
    except durable.RunCancelledError:
        job_status = "cancelled"
    return {"job": job_status, "chunks": statuses,
            "cleaned_up": sorted(c for c in cleaned_up if c.startswith("job-slow"))}


async def main(engine: durable.Engine) -> dict[str, Any]:
    bind(engine)

    async def run(wf: Any, value: Any) -> Any:
        return await (await engine.start(wf, value)).result(timeout=60)

    return {
        "chunked job": await run(job, {"job_id": "job-1", "chunks": [["a", "b"], ["c", " "], ["d", "e", "f"]]}),
        "chunked job, cancelled gracefully": await cancel_a_job(engine),
        "fan-out": await run(fan_out, [1, 2, -3, 4]),
        "fan-in": await run(fan_in, [{"name": "east", "rows": [3, 1]}, {"name": "west", "rows": [2]}]),
        "map-reduce": await run(map_reduce, ["the cat sat", "the dog sat down", "The end"]),
        "scatter-gather": await run(scatter_gather, [[1, 2], [3], [4, 5, 6]]),
        "hierarchy": await run(hierarchy, list(STORES)),
    }
