"""Workflows for the child-workflow tests (importable by worker subprocesses).

Queues: everything registers on 'default'; tests route children to another process by
passing ``queue='kids'`` (a queue only a worker subprocess serves).
"""

from __future__ import annotations

import os
from typing import Any

import durable
from durable.errors import ChildCancelledError, ChildFailedError, DurableError

# Knobs tests flip between executions to replay a run against changed code.
MODE: dict[str, Any] = {"child": "children.leaf", "input": 1}
# A ChildRef of another run, to show it cannot be awaited here.
STASH: dict[str, Any] = {}


@durable.step
async def double(n: int) -> int:
    if n < 0:
        raise durable.ApplicationError(f"negative input {n}", type="NegativeInput", non_retryable=True)
    return n * 2


@durable.step
def whoami() -> int:
    return os.getpid()


@durable.workflow("children.leaf")
async def leaf(ctx: durable.Context, n: int) -> int:
    """Doubles n in one step; fails (NegativeInput) for n < 0."""
    return await ctx.step(double, n)


@durable.workflow("children.other")
async def other(ctx: durable.Context, n: int) -> int:
    return n


@durable.workflow("children.kid")
async def kid(ctx: durable.Context, n: int) -> dict:
    """One step; reports the process that executed it."""
    return {"n": n, "pid": await ctx.step(whoami)}


@durable.workflow("children.gated")
async def gated(ctx: durable.Context, n: int) -> dict:
    """Waits for signal 'go' (payload added to n), then reports its process."""
    extra = await ctx.wait_signal("go")
    return {"n": n + (extra or 0), "pid": os.getpid()}


@durable.workflow("children.fanout")
async def fanout(ctx: durable.Context, spec: dict) -> dict:
    """Start spec['n'] children of spec['wf'] on spec['queue'] in one transaction; fan in."""
    refs = await ctx.start_children(spec["wf"], list(range(spec["n"])), queue=spec.get("queue"),
                                    key=lambda i: f"c{i}")
    results = await ctx.gather(refs)
    return {"sum": sum(r["n"] for r in results), "count": len(results),
            "pids": sorted({r["pid"] for r in results}), "parent_pid": os.getpid()}


@durable.workflow("children.rounds")
async def rounds(ctx: durable.Context, spec: dict) -> list[int]:
    """spec['rounds'] fan-outs of spec['n'] gated children, each gathered before the next."""
    sums = []
    for r in range(spec["rounds"]):
        refs = await ctx.start_children(gated, range(spec["n"]), queue=spec.get("queue"),
                                        key=lambda i, r=r: f"r{r}-{i}")
        sums.append(sum(x["n"] for x in await ctx.gather(refs)))
    return sums


@durable.workflow("children.tree")
async def tree(ctx: durable.Context, depth: int) -> dict:
    """A binary tree of runs `depth` levels below this one; returns leaves and runs."""
    if depth == 0:
        return {"leaves": 1, "runs": 1}
    refs = await ctx.start_children(tree, [depth - 1, depth - 1])
    subs = await ctx.gather(refs)
    return {"leaves": sum(s["leaves"] for s in subs), "runs": 1 + sum(s["runs"] for s in subs)}


@durable.workflow("children.catch")
async def catch(ctx: durable.Context) -> dict:
    """A failed child is caught, typed; gather with return_exceptions keeps going."""
    out: dict[str, Any] = {}
    try:
        await ctx.child(leaf, -5, key="bad")
    except ChildFailedError as exc:
        out["caught"] = [type(exc).__name__, exc.type, str(exc.run_id)]
    refs = await ctx.start_children(leaf, [1, -2, 3])
    got = await ctx.gather(refs, return_exceptions=True)
    out["gathered"] = [g if isinstance(g, int) else type(g).__name__ for g in got]
    try:
        await ctx.gather(refs)
    except ChildFailedError as exc:
        out["gather_raises"] = exc.type
    return out


@durable.workflow("children.await_cancel")
async def await_cancel(ctx: durable.Context) -> str:
    try:
        await ctx.child(gated, 0, key="victim")
    except ChildCancelledError as exc:
        return f"{type(exc).__name__}:{exc.reason}"
    return "not cancelled"


@durable.workflow("children.order")
async def order(ctx: durable.Context, n: int) -> list[int]:
    """as_completed: the order in which n gated children finish."""
    refs = await ctx.start_children(gated, range(n), key=lambda i: f"o{i}")
    seen = []
    async for ref in ctx.as_completed(refs):
        seen.append(ref.result()["n"])
    return seen


@durable.workflow("children.mapper")
async def mapper(ctx: durable.Context, spec: dict) -> list:
    got = await ctx.map(leaf, spec["inputs"], concurrency=spec["window"], return_exceptions=True)
    return [g if isinstance(g, int) else type(g).__name__ for g in got]


@durable.workflow("children.watch")
async def watch(ctx: durable.Context, target: str) -> Any:
    """M:N: wait for any run (not necessarily a child)."""
    try:
        return {"result": await ctx.wait_run(target)}
    except DurableError as exc:
        return {"error": type(exc).__name__}


@durable.workflow("children.parent_of_gated")
async def parent_of_gated(ctx: durable.Context) -> Any:
    return await ctx.child(gated, 100, key="shared")


@durable.workflow("children.stash")
async def stash(ctx: durable.Context) -> int:
    ref = await ctx.start_child(leaf, 7, key="stashed")
    STASH["ref"] = ref
    return await ref


@durable.workflow("children.bad_inputs")
async def bad_inputs(ctx: durable.Context, spec: dict) -> dict:
    """Every bad call raises a typed error and writes nothing; the run then goes on,
    waits for a signal (the test restarts the engine: cold replay) and finishes."""
    errors = []

    async def attempt(coro: Any) -> None:
        try:
            await coro
            errors.append("no error")
        except DurableError as exc:
            errors.append(type(exc).__name__)

    await attempt(ctx.start_child("children.no_such_workflow", 1))
    await attempt(ctx.start_child(leaf, 1, key=5))
    await attempt(ctx.start_children(leaf, [1, 2], key=lambda i: i))
    await attempt(ctx.wait(STASH["ref"]))
    await attempt(ctx.gather([STASH["ref"]]))
    await attempt(ctx.start_child(leaf, 1, key="taken"))  # id taken by a run of another workflow
    await attempt(ctx.wait_run(spec["missing"]))
    await attempt(ctx.wait_run("not-a-uuid"))
    await attempt(ctx.start_child(leaf, "not an int"))
    await attempt(ctx.map(leaf, [1], concurrency=0))
    first = await ctx.child(leaf, 20)
    await ctx.wait_signal("resume")
    second = await ctx.child(leaf, 21)
    return {"errors": errors, "results": [first, second]}


@durable.workflow("children.replay")
async def replay(ctx: durable.Context) -> Any:
    """Starts the child MODE names with MODE's input, waits for 'go', awaits the child."""
    ref = await ctx.start_child(MODE["child"], MODE["input"], site="replayed")
    await ctx.wait_signal("go")
    return await ref



@durable.workflow("children.map_gated")
async def map_gated(ctx: durable.Context, n: int) -> list[int]:
    got = await ctx.map(gated, range(n), concurrency=2)
    return [g["n"] for g in got]
