"""Workflows for test_branches_replay.py: one generic workflow that interprets a JSON
*shape* (a tree of concurrent branches of durable operations), so property tests can
draw random shapes and compute the expected result from the input alone.

Shape format (plain JSON, so it is the run's input)::

    group  = {"comb": "gather" | "tasks" | "taskgroup", "branches": [branch, ...]}
    branch = [op, ...]                       # run one after the other
    op     = {"op": "step",   "v": str, "ms": int}     # a step returning v after ms of (live) delay
           | {"op": "child",  "v": str, "key": bool}   # a child workflow echoing v
           | {"op": "sleep",  "v": str, "ms": int}     # durable ctx.sleep, then v
           | {"op": "signal", "v": str, "name": str}   # ctx.wait_signal(name); the test sends payload v
           | {"op": "fanout", "vs": [str], "key": bool} # ctx.start_children + ctx.gather, echoing vs
           | {"op": "group",  "g": group}              # nested concurrency

    input  = {"tag": str, "root": group}

The workflow runs ``root``, then a marker step ``branches.done`` and a final
``wait_signal("finish")``: once the test sees the marker journaled and the run
suspended, it sends "finish", and the resume that follows replays the complete history
(cold) before returning, so the returned value comes out of a full replay.

Combinators: ``gather`` = asyncio.gather over the branch coroutines; ``tasks`` =
asyncio.create_task per branch, then await each in order; ``taskgroup`` =
asyncio.TaskGroup.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import durable

# live executions of each value step, by "<tag>|<value>" (steps run in this process)
EXECUTED: Counter[str] = Counter()

COMBINATORS = ("gather", "tasks", "taskgroup")


@durable.step("branches.value")
async def value_step(tag: str, v: str, ms: int) -> str:
    EXECUTED[f"{tag}|{v}"] += 1
    if ms:
        await asyncio.sleep(ms / 1000)
    return v


@durable.step("branches.done")
async def done_step(tag: str) -> str:
    return tag


@durable.workflow("branches.echo")
async def echo(ctx: durable.Context, v: str) -> str:
    return v


async def _op(ctx: durable.Context, tag: str, op: dict[str, Any]) -> Any:
    kind = op["op"]
    if kind == "step":
        return await ctx.step(value_step, tag, op["v"], op["ms"])
    if kind == "child":
        return await ctx.child(echo, op["v"], key=op["v"] if op["key"] else None)
    if kind == "sleep":
        await ctx.sleep(op["ms"] / 1000)
        return op["v"]
    if kind == "signal":
        return await ctx.wait_signal(op["name"])
    if kind == "fanout":
        refs = await ctx.start_children(echo, op["vs"], key=(lambda x: x) if op["key"] else None)
        return await ctx.gather(refs)
    if kind == "group":
        return await _group(ctx, tag, op["g"])
    raise ValueError(f"unknown op {kind!r}")


async def _branch(ctx: durable.Context, tag: str, ops: list[dict[str, Any]]) -> list[Any]:
    out = []
    for op in ops:
        out.append(await _op(ctx, tag, op))
    return out


async def _group(ctx: durable.Context, tag: str, g: dict[str, Any]) -> list[Any]:
    comb = g["comb"]
    if comb == "gather":
        return list(await asyncio.gather(*(_branch(ctx, tag, b) for b in g["branches"])))
    if comb == "tasks":
        tasks = [asyncio.create_task(_branch(ctx, tag, b)) for b in g["branches"]]
        return [await t for t in tasks]
    if comb == "taskgroup":
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_branch(ctx, tag, b)) for b in g["branches"]]
        return [t.result() for t in tasks]
    raise ValueError(f"unknown combinator {comb!r}")


@durable.workflow("branches.shape")
async def shape_flow(ctx: durable.Context, spec: dict) -> list:
    result = await _group(ctx, spec["tag"], spec["root"])
    await ctx.step(done_step, spec["tag"])
    await ctx.wait_signal("finish")
    return result


# --- helpers on shapes (pure; used by the tests) --------------------------------------------


def expected(g: dict[str, Any]) -> list[Any]:
    """The result ``shape_flow`` must return for root group ``g``."""
    def op(o: dict[str, Any]) -> Any:
        if o["op"] == "fanout":
            return list(o["vs"])
        if o["op"] == "group":
            return expected(o["g"])
        return o["v"]
    return [[op(o) for o in b] for b in g["branches"]]


def walk(g: dict[str, Any]):
    """Every op of group ``g``, nested groups' ops included (depth first)."""
    for b in g["branches"]:
        for o in b:
            yield o
            if o["op"] == "group":
                yield from walk(o["g"])


def label(g: dict[str, Any], path: str = "b") -> dict[str, Any]:
    """A copy of ``g`` with unique values: op i of branch path p gets "p:i" (signals are
    named "sig-p:i", fan-out child j "p:i/j")."""
    branches = []
    for j, b in enumerate(g["branches"]):
        bp = f"{path}{j}"
        ops = []
        for i, o in enumerate(b):
            v = f"{bp}:{i}"
            o = dict(o)
            if o["op"] == "group":
                o["g"] = label(o["g"], f"{v}.")
            elif o["op"] == "fanout":
                o["vs"] = [f"{v}/{k}" for k in range(o.pop("n"))]
            else:
                o["v"] = v
                if o["op"] == "signal":
                    o["name"] = f"sig-{v}"
            ops.append(o)
        branches.append(ops)
    return {"comb": g["comb"], "branches": branches}


# --- tasks created inside a durable operation (not by the workflow) ----------------------

@durable.workflow("branches.op_tasks")
async def op_tasks_flow(ctx: durable.Context, tag: str) -> list[str]:
    """One branch starts a child (a hook may create a task inside that operation), then a
    nested task of the branch runs a step, then the branch waits for the child; a durable
    sleep makes the end a cold replay of all of it."""

    async def inner() -> str:
        return await ctx.step(value_step, tag, "inner", 0)

    async def branch() -> list[str]:
        ref = await ctx.start_child(echo, "child")
        nested = await asyncio.create_task(inner())
        return [await ref, nested]

    (got,) = await asyncio.gather(branch())
    await ctx.sleep(0.05)
    return got


@durable.workflow("branches.taskgroup_shutdown")
async def taskgroup_shutdown_flow(ctx: durable.Context, tag: str) -> list[str]:
    """A TaskGroup: one branch runs two steps (the first slow), the other waits for a signal."""

    async def steps() -> list[str]:
        return [await ctx.step(value_step, tag, "slow", 300), await ctx.step(value_step, tag, "next", 0)]

    async with asyncio.TaskGroup() as tg:
        a = tg.create_task(steps())
        b = tg.create_task(ctx.wait_signal("go"))
    return [*a.result(), b.result()]


GATE: dict[str, asyncio.Event] = {}


@durable.step("branches.gate")
async def gate_step(tag: str) -> str:
    await GATE.setdefault(tag, asyncio.Event()).wait()
    return tag


@durable.workflow("branches.give_back")
async def give_back_flow(ctx: durable.Context, tag: str) -> list[str]:
    """Two branches pass a gate (their outcomes are buffered), then one starts a child and
    the other runs a step: the first journal write after the gate is the one the test
    holds up."""

    async def b() -> str:
        await ctx.step(gate_step, tag)
        ref = await ctx.start_child(echo, "child")
        return await ref

    async def a() -> str:
        await ctx.step(gate_step, tag)
        return await ctx.step(value_step, tag, "slow", 0)

    return list(await asyncio.gather(a(), b()))
