"""Workflows for the lifecycle tests (cancel, parent-close policies, timeouts, retries,
timers, signals, continue-as-new). Importable by worker subprocesses."""
from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

import durable
from durable import CancellationRequested, ChildCancelledError, ChildFailedError, ParentClosePolicy

# in-process side effects (tests running the engine in-process read these)
CALLS: dict[str, int] = {}


def bump(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


@durable.step
async def long_step(seconds: float) -> str:
    """An async step that takes ``seconds`` (cancellable: it awaits)."""
    await asyncio.sleep(seconds)
    return "slept"


@durable.step
async def stoppable(tag: str) -> str:
    """Runs for an hour; when its execution is stopped (cancelled), it leaves a file named
    ``tag`` in $LC_STOP_DIR, so a test can see a worker process stop it."""
    import os

    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        folder = os.environ.get("LC_STOP_DIR")
        if folder:
            with open(os.path.join(folder, tag), "w") as f:
                f.write("stopped")
        raise
    return tag


@durable.step
async def record(tag: str) -> str:
    bump(tag)
    return tag


# --- trees -----------------------------------------------------------------------------


class TreeSpec(BaseModel):
    depth: int = 0
    max_depth: int
    fan: dict[int, int] = {}      # fan-out per depth (default 1)
    leaf: str = "sleep"           # what a leaf does: 'sleep' | 'step' | 'signal' | 'mixed'
    leaves_from: int = 1_000_000  # from this depth on, only child 0 branches; the others are leaves
    index: int = 0


@durable.workflow("lc.tree")
async def tree(ctx: durable.Context, spec: TreeSpec) -> int:
    """A node of a tree: starts its children in one transaction and waits for them;
    leaves sleep, run a long step or wait for a signal."""
    if spec.depth >= spec.max_depth or (spec.depth >= spec.leaves_from and spec.index > 0):
        kind = spec.leaf
        if kind == "mixed":
            kind = ("sleep", "step", "signal")[(spec.depth + spec.index) % 3]
        if kind == "step":
            await ctx.step(long_step, 3600.0)
        elif kind == "signal":
            await ctx.wait_signal("never")
        else:
            await ctx.sleep(3600)
        return 1
    n = spec.fan.get(spec.depth, 1)
    inputs = [spec.model_copy(update={"depth": spec.depth + 1, "index": i}) for i in range(n)]
    refs = await ctx.start_children(tree, inputs, key=lambda s: str(s.index))
    return 1 + sum(await ctx.gather(refs))


# --- simple building blocks ----------------------------------------------------------


@durable.workflow("lc.sleeper")
async def sleeper(ctx: durable.Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    await ctx.step(record, f"woke-{ctx.run_id}")
    return "woke"


@durable.workflow("lc.busy")
async def busy(ctx: durable.Context, seconds: float) -> str:
    return await ctx.step(long_step, seconds)


@durable.workflow("lc.busy_tagged")
async def busy_tagged(ctx: durable.Context, tag: str) -> str:
    return await ctx.step(stoppable, tag)


@durable.workflow("lc.quick")
async def quick(ctx: durable.Context, n: int) -> int:
    return n * 2


@durable.workflow("lc.waiter")
async def waiter(ctx: durable.Context, name: str) -> Any:
    """Waits for one signal and returns its payload."""
    return await ctx.wait_signal(name)


@durable.workflow("lc.sleep_then_wait")
async def sleep_then_wait(ctx: durable.Context, seconds: float) -> Any:
    await ctx.sleep(seconds)
    return await ctx.wait_signal("after-sleep")


class WaitSpec(BaseModel):
    name: str
    timeout: float | None = None
    count: int = 1


@durable.workflow("lc.collect")
async def collect(ctx: durable.Context, spec: WaitSpec) -> list[Any]:
    """Waits for ``count`` signals (each with the timeout); a timeout is recorded as 'timeout'."""
    out: list[Any] = []
    for _ in range(spec.count):
        try:
            out.append(await ctx.wait_signal(spec.name, timeout=spec.timeout))
        except durable.SignalTimeoutError:
            out.append("timeout")
    return out


class SendSpec(BaseModel):
    target: str
    name: str
    payload: Any = None


@durable.workflow("lc.sender")
async def sender(ctx: durable.Context, spec: SendSpec) -> bool:
    """Signals another run from inside a workflow, then does a step (replay re-sends nothing)."""
    await ctx.signal(spec.target, spec.name, spec.payload)
    await ctx.sleep(0.05)  # a suspension: with max_parked=0 the rest is a cold replay
    await ctx.step(record, f"sent-{ctx.run_id}")
    return True


# --- graceful cancel ---------------------------------------------------------------------


@durable.workflow("lc.graceful")
async def graceful(ctx: durable.Context, mode: str) -> str:
    """Waits (on a signal, a sleep, a child or a long step) and compensates when asked to cancel."""
    try:
        if mode == "signal":
            await ctx.wait_signal("go")
        elif mode == "sleep":
            await ctx.sleep(3600)
        elif mode == "child":
            await ctx.child(sleeper, 3600.0)
        elif mode == "step":
            await ctx.step(long_step, 1.0)
            await ctx.step(record, f"after-step-{ctx.run_id}")
        return "finished"
    except CancellationRequested:
        await ctx.step(record, f"compensated-{ctx.run_id}")
        await ctx.sleep(0.1)  # a durable wait during compensation: resumes (replays) after it
        await ctx.step(record, f"compensated2-{ctx.run_id}")
        return "compensated"


@durable.workflow("lc.as_completed_cancel")
async def as_completed_cancel(ctx: durable.Context) -> dict:
    """Fan-in with as_completed, interrupted by a graceful cancel; the compensation waits
    for the same children and then sleeps (a resume: replayed cold when nothing is parked)."""
    refs = await ctx.start_children(waiter, ["go-1", "go-2"])
    got: list[Any] = []
    try:
        async for ref in ctx.as_completed(refs):
            got.append(ref.result())
        return {"got": got, "compensated": False}
    except CancellationRequested:
        rest = await ctx.gather(refs)
        await ctx.sleep(0.1)
        return {"got": got, "rest": rest, "compensated": True}


@durable.workflow("lc.graceful_raise")
async def graceful_raise(ctx: durable.Context) -> str:
    """Does not catch the cancel request: ends as cancelled."""
    await ctx.wait_signal("go")
    return "finished"


# --- parent-close policies ------------------------------------------------------------


class PolicySpec(BaseModel):
    policy: str
    child_mode: str = "signal"    # what the child does: graceful's modes
    end: str = "complete"         # how the parent ends: 'complete' | 'fail' | 'wait'


@durable.workflow("lc.policy_parent")
async def policy_parent(ctx: durable.Context, spec: PolicySpec) -> str:
    ref = await ctx.start_child(graceful, spec.child_mode, parent_close=ParentClosePolicy(spec.policy))
    if spec.end == "fail":
        raise durable.ApplicationError("parent gives up", type="ParentGaveUp")
    if spec.end == "wait":
        await ctx.wait_signal("never")
    return str(ref.run_id)


# --- cancelling a child from its parent -------------------------------------------------


@durable.workflow("lc.cancel_child")
async def cancel_child_flow(ctx: durable.Context, graceful_cancel: bool) -> dict:
    ref = await ctx.start_child(graceful, "signal")
    other = await ctx.start_child(sleeper, 0.0)
    n = await ctx.cancel_child(ref, graceful=graceful_cancel)
    await ctx.step(record, f"after-cancel-{ctx.run_id}")
    try:
        res = await ref
    except ChildCancelledError as exc:
        res = f"cancelled:{exc.reason}"
    return {"child": res, "cancelled": n, "other": await other}


# --- children with retries, timeouts ------------------------------------------------------


@durable.workflow("lc.flaky")
async def flaky(ctx: durable.Context, succeed_on: int) -> dict:
    if ctx.attempt < succeed_on:
        raise durable.ApplicationError(f"attempt {ctx.attempt} fails", type="Flaky")
    return {"attempt": ctx.attempt, "run_id": str(ctx.run_id)}


class RetrySpec(BaseModel):
    succeed_on: int
    max_attempts: int
    interval: float = 0.0


@durable.workflow("lc.retry_parent")
async def retry_parent(ctx: durable.Context, spec: RetrySpec) -> Any:
    policy = durable.RetryPolicy(initial_interval=spec.interval, backoff=1.0, max_attempts=spec.max_attempts)
    try:
        return await ctx.child(flaky, spec.succeed_on, retry=policy)
    except ChildFailedError as exc:
        return {"failed": exc.type}


class TimeoutSpec(BaseModel):
    timeout: float
    policy: str = "terminate"


@durable.workflow("lc.timeout_parent")
async def timeout_parent(ctx: durable.Context, spec: TimeoutSpec) -> str:
    """Starts a grandchild-owning child with an execution timeout and reports how it ended."""
    try:
        await ctx.child(timeout_middle, spec.policy, timeout=spec.timeout)
        return "completed"
    except ChildFailedError as exc:
        return f"failed:{exc.type}"


@durable.workflow("lc.timeout_middle")
async def timeout_middle(ctx: durable.Context, policy: str) -> str:
    await ctx.start_child(graceful, "signal", parent_close=ParentClosePolicy(policy))
    await ctx.sleep(3600)
    return "woke"


# --- continue-as-new --------------------------------------------------------------------


class ChainSpec(BaseModel):
    link: int = 0
    links: int
    wait_signal: bool = False
    got: list[Any] = []


@durable.workflow("lc.chain")
async def chain(ctx: durable.Context, spec: ChainSpec) -> dict:
    """Continues as new until ``links`` runs made the chain; optionally each link waits
    for one signal 'tick' first (a signal sent during a hand-over reaches the next link)."""
    got = list(spec.got)
    if spec.wait_signal:
        got.append(await ctx.wait_signal("tick"))
    if spec.link + 1 < spec.links:
        ctx.continue_as_new(spec.model_copy(update={"link": spec.link + 1, "got": got}))
    return {"link": spec.link, "run_id": str(ctx.run_id), "got": got}


@durable.workflow("lc.wait_other")
async def wait_other(ctx: durable.Context, run_id: str) -> Any:
    return await ctx.wait_run(run_id)


@durable.workflow("lc.can_with_child")
async def can_with_child(ctx: durable.Context, link: int) -> str:
    """The first link starts a child it never awaits and continues as new: the child moves
    to the successor (and is closed by its policy when the chain ends)."""
    if link == 0:
        await ctx.start_child(waiter, "never")
        ctx.continue_as_new(1)
    await ctx.wait_signal("finish")
    return "done"


@durable.workflow("lc.await_child")
async def await_child(ctx: durable.Context) -> str:
    ref = await ctx.start_child(sleeper, 3600.0)
    try:
        return await ref
    except ChildCancelledError as exc:
        return f"child_cancelled:{exc.reason}"


@durable.workflow("lc.chain_parent")
async def chain_parent(ctx: durable.Context, spec: ChainSpec) -> dict:
    return await ctx.child(chain, spec)


class Strict(BaseModel):
    n: int


@durable.workflow("lc.strict_can")
async def strict_can(ctx: durable.Context, n: int) -> str:
    """continue_as_new with an input that fails validation: caught, reported."""
    try:
        ctx.continue_as_new({"not": "an int"})
    except durable.PayloadError as exc:
        return f"refused:{type(exc).__name__}"
    return "continued?"


@durable.workflow("lc.history")
async def history_hog(ctx: durable.Context, steps: int) -> int:
    for i in range(steps):
        await ctx.step(record, "hog")
    return ctx.history_length


@durable.workflow("lc.deep")
async def deep(ctx: durable.Context, levels: int) -> int:
    """A chain of children ``levels`` deep (each waits for its child)."""
    if levels <= 0:
        return 0
    return 1 + await ctx.child(deep, levels - 1)


class SpawnSpec(BaseModel):
    n: int
    depth: int = 0
    levels: int = 1


@durable.workflow("lc.spawner")
async def spawner(ctx: durable.Context, spec: SpawnSpec) -> int:
    """Starts its children one at a time (a cancel races with these starts); children of
    the last level sleep."""
    refs = []
    for i in range(spec.n):
        if spec.depth + 1 < spec.levels:
            refs.append(await ctx.start_child(spawner, spec.model_copy(update={"depth": spec.depth + 1}), key=str(i)))
        else:
            refs.append(await ctx.start_child(sleeper, 3600.0, key=str(i)))
    await ctx.gather(refs)
    return spec.n


@durable.workflow("lc.parent_of_quick")
async def parent_of_quick(ctx: durable.Context, n: int) -> int:
    return await ctx.child(quick_step, n)


@durable.workflow("lc.quick_step")
async def quick_step(ctx: durable.Context, n: int) -> int:
    await ctx.step(record, "quick")
    return n


class BadSpec(BaseModel):
    what: str
    value: Any = None


@durable.workflow("lc.bad_timeouts")
async def bad_timeouts(ctx: durable.Context, spec: BadSpec) -> dict:
    """Calls one API with a bad duration; reports the error type and the history length
    (0: nothing was written)."""
    try:
        if spec.what == "sleep":
            await ctx.sleep(spec.value)
        elif spec.what == "signal":
            await ctx.wait_signal("x", timeout=spec.value)
        elif spec.what == "child":
            await ctx.start_child(quick, 1, timeout=spec.value)
        elif spec.what == "step":
            await ctx.step(record, "never", timeout=spec.value)
    except durable.ConfigurationError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "history": ctx.history_length}
    return {"error": None, "history": ctx.history_length}


@durable.workflow("lc.step_timeout")
async def step_timeout_flow(ctx: durable.Context, seconds: float) -> str:
    try:
        await ctx.step(long_step, 30.0, timeout=seconds, retry=durable.RetryPolicy(max_attempts=1))
    except durable.StepError as exc:
        return f"{exc.type}"
    return "no timeout"
