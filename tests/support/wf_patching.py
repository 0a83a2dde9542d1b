"""Workflows whose code changes under running runs (tests of ctx.patched, deprecate_patch and
the Replayer: tests/integration/test_patching.py, test_replayer.py, tests/procs/test_patching_procs.py).

The deployed code is ``CODE["mode"]``, switched by a test between a crash and the replay
(another process sets it by importing wf_patching_new / wf_patching_unguarded):

- ``old``: step a, step old_b, ...
- ``patched``: ``if ctx.patched("new-b")``: step new_b, else step old_b
- ``unguarded``: step new_b (the same change without a guard)
- ``deprecated``: ``ctx.deprecate_patch("new-b")``, step new_b
- ``removed``: step new_b (the deprecate_patch call deleted too)

``CALLS`` records every step call of this process (a replay must add none).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import durable

CODE = {"mode": "old"}
CALLS: list[str] = []


@durable.step("patching.a")
def step_a(n: int) -> int:
    CALLS.append("a")
    return n + 1


@durable.step("patching.old_b")
def old_b(n: int) -> str:
    CALLS.append("old_b")
    return "old"


@durable.step("patching.new_b")
def new_b(n: int) -> str:
    CALLS.append("new_b")
    return "new"


@durable.step("patching.gate")
def gate(flag: str) -> bool:
    """Blocks until the file ``flag`` exists (a step in flight when a worker is killed)."""
    while not os.path.exists(flag):
        time.sleep(0.05)
    return True


async def changed_b(ctx: durable.Context, n: int) -> str:
    mode = CODE["mode"]
    if mode == "old":
        return await ctx.step(old_b, n)
    if mode == "patched":
        if ctx.patched("new-b"):
            return await ctx.step(new_b, n)
        return await ctx.step(old_b, n)
    if mode == "deprecated":
        ctx.deprecate_patch("new-b")
        return await ctx.step(new_b, n)
    assert mode in ("unguarded", "removed"), mode
    return await ctx.step(new_b, n)


@durable.workflow("patching.order")
async def order(ctx: durable.Context, job: dict[str, Any]) -> dict[str, Any]:
    """job: n, and optionally flag (a gate step after b) and wait (a signal 'go' before the end)."""
    a = await ctx.step(step_a, job["n"])
    b = await changed_b(ctx, job["n"])
    if job.get("flag"):
        await ctx.step(gate, job["flag"])
    if job.get("wait"):
        await ctx.wait_signal("go")
    c = await ctx.step(step_a, a)
    return {"a": a, "b": b, "c": c}


async def looped_b(ctx: durable.Context, n: int) -> str:
    """One call site asked in a loop (one marker per branch)."""
    if CODE["mode"] == "old":
        return await ctx.step(old_b, n)
    if ctx.patched("branch-b"):
        return await ctx.step(new_b, n)
    return await ctx.step(old_b, n)


@durable.workflow("patching.branches")
async def branches(ctx: durable.Context, wait: bool) -> list[list[str]]:
    """Two concurrent branches, each asking the same change id twice (a loop)."""
    async def one(i: int) -> list[str]:
        return [await looped_b(ctx, i * 10 + k) for k in range(2)]

    got = await asyncio.gather(one(0), one(1))
    if wait:
        await ctx.wait_signal("go")
    return list(got)


@durable.workflow("patching.bad")
async def bad(ctx: durable.Context, what: str) -> bool:
    """Bad change ids: not a string, empty, one id at two places."""
    if what == "int":
        return ctx.patched(123)  # type: ignore[arg-type]
    if what == "empty":
        return ctx.patched(" ")
    first = ctx.patched("dup")
    await ctx.step(step_a, 1)
    return first and ctx.patched("dup")  # a second place


@durable.workflow("patching.parent")
async def parent(ctx: durable.Context, n: int) -> dict[str, Any]:
    """A child run; the unguarded code changes the child's input."""
    if CODE["mode"] == "unguarded":
        n += 100
    return await ctx.child(order, {"n": n})
