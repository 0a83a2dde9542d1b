"""Workflows for the re-drive tests (resume / restart / fork): counters of step executions
and knobs the tests flip between a failure and its resume (a "fixed bug")."""

from __future__ import annotations

from collections import Counter
from typing import Any

import durable

CALLS: Counter[str] = Counter()        # step executions by label
BROKEN: set[str] = set()               # labels whose step fails (non-retryable) while listed

NO_RETRY = durable.RetryPolicy(max_attempts=1)


@durable.step(retry=NO_RETRY)
async def work(label: str) -> str:
    CALLS[label] += 1
    if label in BROKEN:
        raise durable.ApplicationError(f"{label} is broken", type="Broken", non_retryable=True)
    return label


@durable.workflow("redrive.steps")
async def steps_flow(ctx: durable.Context, labels: list[str]) -> list[str]:
    """One step per label, in order."""
    return [await ctx.step(work, label) for label in labels]


@durable.workflow("redrive.leaf")
async def leaf(ctx: durable.Context, label: str) -> str:
    return await ctx.step(work, label)


@durable.workflow("redrive.sleepy_leaf")
async def sleepy_leaf(ctx: durable.Context, label: str) -> str:
    await ctx.wait_signal("go")
    return await ctx.step(work, label)


@durable.workflow("redrive.parent")
async def parent(ctx: durable.Context, spec: dict[str, Any]) -> list[str]:
    """A step, then children of spec['leaf'] (one per label, fanned in), then a last step."""
    first = await ctx.step(work, spec["prefix"] + "first")
    refs = await ctx.start_children(spec.get("leaf", "redrive.leaf"), spec["kids"],
                                    key=lambda label: label)
    kids = await ctx.gather(refs)
    last = await ctx.step(work, spec["prefix"] + "last")
    return [first, *kids, last]


@durable.workflow("redrive.timed")
async def timed(ctx: durable.Context, label: str) -> str:
    """A step, a wait for signal 'go', a step (started with an execution timeout: it times
    out while nobody signals)."""
    first = await ctx.step(work, label + "-1")
    await ctx.wait_signal("go")
    return first + "," + await ctx.step(work, label + "-2")


GATE: dict[str, Any] = {}              # "open": an asyncio.Event the gated step waits for


@durable.step(retry=NO_RETRY)
async def gated_step(label: str) -> str:
    CALLS[label] += 1
    await GATE["open"].wait()
    return label


@durable.workflow("redrive.gated")
async def gated(ctx: durable.Context, label: str) -> list[str]:
    """A step, then a step that waits (running, holding its lease) until the test opens GATE."""
    return [await ctx.step(work, label + "-1"), await ctx.step(gated_step, label + "-2")]
