"""Workflows that fail in known ways, for tests/integration/test_failures.py and the
dispatcher's JSON log test in tests/procs/test_dispatcher_cli.py. Every input carries a
secret string that no log line may show."""

from __future__ import annotations

import asyncio
from typing import Any

import durable
from durable import ApplicationError, ChildFailedError, RetryPolicy

ATTEMPTS: dict[str, int] = {}  # step attempts by the input's "tag" (in-process tests)
HOLD = asyncio.Event()          # hold_step waits for it (a run that stays running)


@durable.step
async def lookup(job: dict[str, Any]) -> str:
    ATTEMPTS[job["tag"]] = ATTEMPTS.get(job["tag"], 0) + 1
    return {"known": "x"}[job["secret"]]  # KeyError: the secret is not a known key


@durable.step
async def charge(job: dict[str, Any]) -> str:
    ATTEMPTS[job["tag"]] = ATTEMPTS.get(job["tag"], 0) + 1
    raise ApplicationError("card refused", type="Declined", non_retryable=True,
                           details={"code": 51, "card": "tail-1234"})


@durable.step
async def note(value: str) -> str:
    return value


@durable.step
async def hold_step(job: dict[str, Any]) -> str:
    await HOLD.wait()
    return "held"


@durable.workflow("fail.keyerror")
async def keyerror(ctx: durable.Context, job: dict[str, Any]) -> str:
    return await ctx.step(lookup, job, retry=RetryPolicy(max_attempts=1))


@durable.workflow("fail.declined")
async def declined(ctx: durable.Context, job: dict[str, Any]) -> str:
    # a policy of 5 attempts: the non-retryable ApplicationError stops it at the first
    return await ctx.step(charge, job, retry=RetryPolicy(max_attempts=5, initial_interval=0))


@durable.workflow("fail.mid")
async def mid(ctx: durable.Context, job: dict[str, Any]) -> str:
    return await ctx.child(declined, job)


@durable.workflow("fail.top")
async def top(ctx: durable.Context, job: dict[str, Any]) -> str:
    """top → mid → declined → step charge → Declined: two levels of children."""
    return await ctx.child(mid, job)


@durable.workflow("fail.catch")
async def catch(ctx: durable.Context, job: dict[str, Any]) -> dict[str, Any]:
    """Catches a grandchild's failure, waits for a signal (so a test can close the engine
    and replay it elsewhere), then returns what the except clause saw."""
    try:
        await ctx.child(mid, job)
        seen: dict[str, Any] = {}
    except ChildFailedError as e:
        root = e.root
        seen = {"type": e.type, "root_type": e.root_type, "chain": [link.type for link in e.cause.chain()]
                if e.cause else [], "details": root.details if root else None,
                "non_retryable": root.non_retryable if root else None}
    await ctx.step(note, str(seen.get("root_type")))
    await ctx.wait_signal("go")
    return seen


@durable.workflow("fail.retried_child")
async def retried_child(ctx: durable.Context, job: dict[str, Any]) -> str:
    return await ctx.step(lookup, job, retry=RetryPolicy(max_attempts=1))


@durable.workflow("fail.retry_parent")
async def retry_parent(ctx: durable.Context, job: dict[str, Any]) -> str:
    """A child with a retry policy of 2 attempts: one retried line, then failed."""
    return await ctx.child(retried_child, job, retry=RetryPolicy(max_attempts=2, initial_interval=0))


@durable.workflow("fail.final_parent")
async def final_parent(ctx: durable.Context, job: dict[str, Any]) -> str:
    """A child with a retry policy of 3 attempts that fails non-retryably: not retried."""
    return await ctx.child(declined, job, retry=RetryPolicy(max_attempts=3, initial_interval=0))


@durable.workflow("fail.waits")
async def waits(ctx: durable.Context, job: dict[str, Any]) -> str:
    await ctx.wait_signal("never")
    return "signalled"


@durable.workflow("fail.holds")
async def holds(ctx: durable.Context, job: dict[str, Any]) -> str:
    return await ctx.step(hold_step, job)


@durable.workflow("fail.logs")
async def logs_line(ctx: durable.Context, job: dict[str, Any]) -> str:
    ctx.log.info("hello from the workflow", extra={"order": "o-1"})
    return "ok"
