"""Workflows and their step helpers for the core tests (test_core_*.py). Importable by
worker subprocesses (tests/support/worker_proc.py ... wf_core), so everything here is
module level. (Polling and database helpers live in helpers.py.)"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from pydantic import BaseModel

import durable

# --- marks: steps with a side effect counted across processes -------------------------


class MarkJob(BaseModel):
    path: str                 # each executed mark step appends "<k> <pid>" here
    n: int                    # number of mark steps
    gate_at: int | None = None  # before mark k == gate_at, a step blocks until `flag` exists
    flag: str | None = None


@durable.step("core.mark")
async def mark(path: str, k: int) -> int:
    with open(path, "a") as f:
        f.write(f"{k} {os.getpid()}\n")
    return k * 10


@durable.step("core.gate")
async def gate(flag: str) -> bool:
    while not os.path.exists(flag):
        await asyncio.sleep(0.05)
    return True


@durable.workflow("core.marks")
async def marks_flow(ctx: durable.Context, job: MarkJob) -> list[int]:
    out: list[int] = []
    for k in range(job.n):
        if k == job.gate_at:
            await ctx.step(gate, job.flag)
        out.append(await ctx.step(mark, job.path, k))
    return out


def read_marks(path: str) -> list[tuple[int, int]]:
    """(k, pid) per executed mark step."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(k), int(pid)) for k, pid in (line.split() for line in f if line.strip())]


# --- in-process workflows (counters live in this process) ------------------------------

CALLS: Counter[str] = Counter()


@durable.step("core.flaky")
async def flaky(tag: str, fail_times: int, exc: str) -> int:
    """Fails the first ``fail_times`` calls per tag with the named exception type."""
    CALLS[tag] += 1
    if CALLS[tag] <= fail_times:
        if exc == "key":
            raise KeyError(tag)
        if exc == "app":
            raise durable.ApplicationError(f"{tag} is broken for good", type="Broken", non_retryable=True)
        raise ValueError(f"{tag} attempt {CALLS[tag]} failed")
    return CALLS[tag]


class Flaky(BaseModel):
    tag: str
    fail: int
    exc: str = "value"
    initial: float = 0.05
    backoff: float = 2.0
    max_interval: float = 0.08
    max_attempts: int = 5
    non_retryable: list[str] = []


@durable.workflow("core.flaky")
async def flaky_flow(ctx: durable.Context, spec: Flaky) -> int:
    nr: tuple[Any, ...] = tuple(KeyError if n == "KeyError" else n for n in spec.non_retryable)
    policy = durable.RetryPolicy(initial_interval=spec.initial, backoff=spec.backoff,
                                 max_interval=spec.max_interval, max_attempts=spec.max_attempts,
                                 non_retryable=nr)
    return await ctx.step(flaky, spec.tag, spec.fail, spec.exc, retry=policy)


@durable.step("core.boom", retry=durable.RetryPolicy(max_attempts=1))
async def boom(tag: str) -> None:
    CALLS[tag] += 1
    raise durable.ApplicationError(f"boom {tag}", type="Boom", details={"tag": tag})


@durable.workflow("core.step_error")
async def step_error_flow(ctx: durable.Context, tag: str) -> dict:
    """Catches a journaled step error, then waits for a signal (so a new engine replays)."""
    try:
        await ctx.step(boom, tag)
        caught: dict = {}
    except durable.StepError as exc:
        caught = {"type": exc.type, "message": exc.message, "attempts": exc.attempts, "step": exc.step,
                  "details": exc.error.get("details")}
    await ctx.wait_signal("go")
    return caught


@durable.workflow("core.wait_go")
async def wait_go_flow(ctx: durable.Context, x: int) -> int:
    got = await ctx.wait_signal("go")
    return x + got


class Order(BaseModel):
    id: str
    qty: int


class Receipt(BaseModel):
    order_id: str
    total: float


@durable.step("core.price")
async def price(order: Order) -> Receipt:
    return Receipt(order_id=order.id, total=order.qty * 2.5)


@durable.workflow("core.typed")
async def typed_flow(ctx: durable.Context, order: Order) -> Receipt:
    r = await ctx.step(price, order)
    assert isinstance(r, Receipt)
    return r


@durable.workflow("core.echo")
async def echo_flow(ctx: durable.Context, value):  # untyped: plain JSON values as they are
    return await ctx.step(lambda v: v, value, name="core.echo.step")


@durable.workflow("core.no_input")
async def no_input_flow(ctx: durable.Context) -> str:
    return "ok"


@durable.workflow("core.bad_result")
async def bad_result_flow(ctx: durable.Context, kind: str) -> int:
    if kind == "unserialisable":
        return object()  # type: ignore[return-value]
    if kind == "big":
        return "x" * 5000  # type: ignore[return-value]
    return "not an int"  # type: ignore[return-value]


@durable.step("core.bad_step_result")
async def bad_step_result(kind: str) -> int:
    CALLS["bad_step_result"] += 1
    return {"set": {1, 2}, "obj": object()} if kind == "unserialisable" else "x" * 5000  # type: ignore[return-value]


@durable.workflow("core.bad_step")
async def bad_step_flow(ctx: durable.Context, kind: str) -> str:
    try:
        await ctx.step(bad_step_result, kind, retry=durable.RetryPolicy(max_attempts=3, initial_interval=0))
    except durable.StepError as exc:
        return f"{exc.type}: {exc.message}"
    return "no error"


@durable.workflow("core.direct_step_call")
async def direct_step_call_flow(ctx: durable.Context, tag: str) -> int:
    """Calls a step as a plain function (a mistake: it must be ``ctx.step(flaky, ...)``)."""
    return await flaky(tag, 0, "ValueError")
