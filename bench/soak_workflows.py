"""Workflows of the fault-injecting soak (``python -m bench.soak``), imported by the soak's
dispatcher subprocesses (``-m bench.soak_workflows``) and by its driver (to start runs by
name and to compute every root's expected outcome from its input: :func:`expected`).

Every step goes through :func:`rstep`, whose step body appends two JSON lines to
``$SOAK_STEP_DIR/<pid>.jsonl``: ``{"ev": "start", ...}`` when the step function is entered
and ``{"ev": "end", ...}`` when it leaves (a SIGKILLed process's last step has no end line).
Each line names the run, the step's position and name, the attempt the step believes it is
(1 + the step_retry events the execution knows at that position, so a step that fails its
first attempt "by attempt number" is deterministic across crashes and replays), the lease
token and pid, and the wall (``t``, comparable with the database's clock on the same host)
and monotonic (``m``, machine-wide) times.

Tree kinds (the ``kind`` of a root's input; see the driver for the mix):

- ``tree``: depth-3 fan-out of ``soak.tree`` nodes; each node runs a step, some a step that
  fails its first attempt, some a durable sleep; inner nodes start their children in one
  fan-out and gather them. ``hold`` trees' leaves wait for a signal nobody sends: they end
  only when the driver cancels the root.
- ``branches``: ``asyncio.gather`` over two async branch functions inside one workflow
  (steps + a sleep | a child + a step), concurrent durable operations of one run.
- ``child_retry``: a child with a RetryPolicy whose attempt 1 fails (ctx.attempt == 1).
- ``doomed``: a child whose step fails permanently (2 attempts) and which then fails with
  ``SoakDoomed``; the root catches ChildFailedError and returns a marker (``catch``) or
  lets it fail the root (expected: failed with ChildFailedError).
- ``signals``: waiter and sender children; the sender signals its sibling and its parent
  (ctx.signal); the root also waits for ``ext`` from the driver, which sends one delivery id
  several times concurrently (a second delivery would change the result).
- ``loop``: continue-as-new a few times, with a step (and a sleep) per link.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any

import durable
from durable.runtime import keys
from durable import ApplicationError, ChildFailedError, RetryPolicy, SignalTimeoutError, StepError

FAST_RETRY = RetryPolicy(initial_interval=0.1, backoff=1.0, max_attempts=4)
BROKEN_RETRY = RetryPolicy(initial_interval=0.05, backoff=1.0, max_attempts=2)
CHILD_RETRY = RetryPolicy(initial_interval=0.1, backoff=1.0, max_attempts=3)
TREE_FANS = (3, 2, 1)        # a depth-3 tree: 1 + 3 + 6 + 6 = 16 runs
DUP_MARK = 1_000_000         # added to a signals root's result if "ext" arrived twice


# --- deterministic values -------------------------------------------------------------------


def h(seed: int, path: str, mod: int = 1000) -> int:
    """A deterministic value per (seed, path) (never Python's randomised hash())."""
    return int(hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()[:8], 16) % mod


def node_retry(seed: int, path: str) -> bool:
    return h(seed, path + ":retry", 3) == 0


def node_sleep(seed: int, path: str) -> float:
    """0 (no sleep) or a durable sleep of 0.05-0.5 s."""
    n = h(seed, path + ":sleep", 10)
    return 0.0 if n < 4 else 0.05 + 0.45 * (n - 4) / 5


def step_nap(seed: int, path: str) -> float:
    return h(seed, path + ":nap", 4) * 0.02  # 0-60 ms inside the step (overlap checks need width)


def ext_payload(seed: int) -> int:
    return 7000 + h(seed, "ext")


# --- step execution records -----------------------------------------------------------------


def _record(line: dict[str, Any]) -> None:
    folder = os.environ.get("SOAK_STEP_DIR")
    if not folder:
        return
    with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(line, separators=(",", ":")) + "\n")


class Probe:
    """Passed to the step (step arguments are not journaled): which run, position and
    attempt this execution of the step is."""

    __slots__ = ("ex", "pos", "name")

    def __init__(self, ctx: durable.Context, pos: int, name: str) -> None:
        self.ex, self.pos, self.name = ctx._ex, pos, name

    def attempt(self) -> int:
        evs = self.ex.journal.at(self.pos) or ()
        return 1 + max((e.data.get("attempt", 0) for e in evs if e.kind == "step_retry"), default=0)


@durable.step("soak.work")
async def work(probe: Probe, value: int, mode: str, nap: float) -> int:
    ex = probe.ex
    attempt = probe.attempt()
    base = {"run": str(ex.run_id), "pos": probe.pos, "name": probe.name, "attempt": attempt,
            "pid": os.getpid(), "token": ex.journal.token}
    m0 = time.monotonic()
    _record({"ev": "start", **base, "t": time.time(), "m": m0})
    ok = False
    try:
        if nap:
            await asyncio.sleep(nap)
        if mode == "fail_first" and attempt == 1:
            raise ApplicationError(f"attempt {attempt} fails on purpose", type="SoakFlaky")
        if mode == "always_fail":
            raise ApplicationError(f"attempt {attempt} fails on purpose, always", type="SoakBroken")
        ok = True
        return value
    finally:
        _record({"ev": "end", **base, "t": time.time(), "m": time.monotonic(), "m0": m0, "ok": ok})


def _next_key(ctx: durable.Context) -> Any:
    """The key of the next durable operation of the calling branch: an int position, or a
    branch operation key like "0.1:2" when the engine keys concurrent branches."""
    return keys.branch(ctx._ex).next_key()


async def rstep(ctx: durable.Context, name: str, value: int, *, mode: str = "ok", nap: float = 0.0,
                retry: RetryPolicy | None = None) -> int:
    """A recorded step named ``name`` returning ``value``. The position (operation key) read
    here is the one ctx.step takes: nothing yields between reading it and ctx.step taking it."""
    pos = _next_key(ctx)
    return await ctx.step(work, Probe(ctx, pos, name), value, mode, nap, name=name, retry=retry)


# --- workflows ------------------------------------------------------------------------------


@durable.workflow("soak.tree")
async def tree(ctx: durable.Context, spec: dict) -> int:
    seed, path, fans = spec["seed"], spec["path"], spec["fans"]
    v = await rstep(ctx, "val", h(seed, path), nap=step_nap(seed, path))
    if node_retry(seed, path):
        v += await rstep(ctx, "flaky", h(seed, path + ":f"), mode="fail_first", retry=FAST_RETRY)
    nap = node_sleep(seed, path)
    if nap:
        await ctx.sleep(nap)
    if fans:
        kids = [{**spec, "path": f"{path}.{i}", "fans": fans[1:]} for i in range(fans[0])]
        refs = await ctx.start_children("soak.tree", kids)
        v += sum(await ctx.gather(refs))
    elif spec.get("hold"):
        await ctx.wait_signal("never")  # only a cancel ends this tree
    return v


def tree_value(seed: int, path: str, fans: list[int]) -> int:
    v = h(seed, path)
    if node_retry(seed, path):
        v += h(seed, path + ":f")
    if fans:
        v += sum(tree_value(seed, f"{path}.{i}", fans[1:]) for i in range(fans[0]))
    return v


@durable.workflow("soak.leaf")
async def leaf(ctx: durable.Context, spec: dict) -> int:
    return await rstep(ctx, "val", h(spec["seed"], spec["path"]), nap=0.02)


@durable.workflow("soak.branches")
async def branches(ctx: durable.Context, spec: dict) -> int:
    seed = spec["seed"]

    async def left() -> int:
        a = await rstep(ctx, "l1", h(seed, "l1"), nap=0.02)
        await ctx.sleep(0.1)
        b = await rstep(ctx, "l2", h(seed, "l2"), nap=0.02)
        return a + b

    async def right() -> int:
        c = await ctx.child("soak.leaf", {"seed": seed, "path": "rc"})
        d = await rstep(ctx, "r1", h(seed, "r1"))
        return c + d

    x, y = await asyncio.gather(left(), right())
    return 3 * x + y


@durable.workflow("soak.flaky_child")
async def flaky_child(ctx: durable.Context, spec: dict) -> int:
    v = await rstep(ctx, "val", h(spec["seed"], "fc"), nap=0.02)
    if ctx.attempt == 1:
        raise ApplicationError("child attempt 1 fails on purpose", type="SoakChildFlaky")
    return v


@durable.workflow("soak.child_retry")
async def child_retry(ctx: durable.Context, spec: dict) -> int:
    v = await ctx.child("soak.flaky_child", {"seed": spec["seed"]}, retry=CHILD_RETRY)
    return v + await rstep(ctx, "after", h(spec["seed"], "after"))


@durable.workflow("soak.doomed_child")
async def doomed_child(ctx: durable.Context, spec: dict) -> int:
    try:
        await rstep(ctx, "broken", 0, mode="always_fail", retry=BROKEN_RETRY)
    except StepError as exc:
        raise ApplicationError(f"doomed after {exc.attempts} attempts", type="SoakDoomed") from None
    return 0  # never: the step always fails


@durable.workflow("soak.doomed")
async def doomed(ctx: durable.Context, spec: dict) -> Any:
    v = await rstep(ctx, "before", h(spec["seed"], "before"))
    try:
        await ctx.child("soak.doomed_child", {"seed": spec["seed"]})
    except ChildFailedError as exc:
        if not spec["catch"]:
            raise
        return {"caught": exc.type, "before": v}
    return {"unexpected": "the doomed child completed"}


@durable.workflow("soak.sig_waiter")
async def sig_waiter(ctx: durable.Context, spec: dict) -> int:
    p = await ctx.wait_signal("ping")
    return p + await rstep(ctx, "val", h(spec["seed"], "w"))


@durable.workflow("soak.sig_sender")
async def sig_sender(ctx: durable.Context, spec: dict) -> int:
    v = await rstep(ctx, "val", h(spec["seed"], "s"), nap=0.02)
    await ctx.signal(spec["target"], "ping", v)       # to the sibling
    await ctx.signal(spec["parent"], "up", 2 * v)      # to the parent
    return v


@durable.workflow("soak.signals")
async def signals(ctx: durable.Context, spec: dict) -> int:
    seed = spec["seed"]
    w = await ctx.start_child("soak.sig_waiter", {"seed": seed})
    s = await ctx.start_child("soak.sig_sender", {"seed": seed, "target": str(w.run_id),
                                                  "parent": str(ctx.run_id)})
    ext = await ctx.wait_signal("ext")  # from the driver, delivered once whatever the races
    try:
        await ctx.wait_signal("ext", timeout=0.3)
        dup = DUP_MARK
    except SignalTimeoutError:
        dup = 0
    up = await ctx.wait_signal("up")
    wv, sv = await ctx.gather([w, s])
    return ext + up + wv + sv + dup


@durable.workflow("soak.loop")
async def loop(ctx: durable.Context, spec: dict) -> int:
    i, seed = spec["i"], spec["seed"]
    acc = spec["acc"] + await rstep(ctx, "val", h(seed, f"i{i}"), nap=0.01)
    if i % 2 == 0:
        await ctx.sleep(0.05)
    if i + 1 < spec["n"]:
        ctx.continue_as_new({**spec, "i": i + 1, "acc": acc})
    return acc


# --- roots and their expected outcomes --------------------------------------------------------

WORKFLOW_OF = {"tree": "soak.tree", "hold": "soak.tree", "branches": "soak.branches",
               "child_retry": "soak.child_retry", "doomed": "soak.doomed", "signals": "soak.signals",
               "loop": "soak.loop"}


def root_input(kind: str, seed: int, *, catch: bool = True, links: int = 4) -> dict[str, Any]:
    if kind == "tree":
        return {"seed": seed, "path": "r", "fans": list(TREE_FANS)}
    if kind == "hold":
        return {"seed": seed, "path": "r", "fans": [2, 2], "hold": True}
    if kind == "doomed":
        return {"seed": seed, "catch": catch}
    if kind == "loop":
        return {"seed": seed, "i": 0, "n": links, "acc": 0}
    return {"seed": seed}


def expected(kind: str, spec: dict[str, Any]) -> tuple[str, Any]:
    """(status, result) for completed roots, (status, error type) for failed ones."""
    seed = spec["seed"]
    if kind == "hold":
        return ("cancelled", None)
    if kind == "tree":
        return ("completed", tree_value(seed, spec["path"], spec["fans"]))
    if kind == "branches":
        return ("completed", 3 * (h(seed, "l1") + h(seed, "l2")) + h(seed, "rc") + h(seed, "r1"))
    if kind == "child_retry":
        return ("completed", h(seed, "fc") + h(seed, "after"))
    if kind == "doomed":
        if spec["catch"]:
            return ("completed", {"caught": "SoakDoomed", "before": h(seed, "before")})
        return ("failed", "ChildFailedError")
    if kind == "signals":
        s, w = h(seed, "s"), h(seed, "w")
        return ("completed", ext_payload(seed) + 2 * s + (s + w) + s)
    if kind == "loop":
        return ("completed", sum(h(seed, f"i{i}") for i in range(spec["n"])))
    raise ValueError(kind)
