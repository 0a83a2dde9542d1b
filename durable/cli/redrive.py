"""``durable resume|restart|fork``: re-drive runs (one run, or in bulk by status, workflow
and age with ``--dry-run``). See durable/runtime/redrive.py for what each does."""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..engine import Engine
from ..errors import DurableError
from ..handle import RunHandle
from ..runtime import redrive
from ..store.rows import RedriveCandidate
from .common import FAILED, OK, USAGE, CliError, engine, run_id, seconds
from .output import Out, error_line

_RESUMABLE = ("failed", "cancelled")
_ANY_STATUS = ("pending", "running", "suspended", "completed", "failed", "cancelled", "continued")


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """The subcommands, added to the CLI's parser by ``add(name, help, more)``."""
    bulk = ("Give RUN, or select runs (top-level only, newest first) with --status and optionally --workflow, "
            "--since, --limit; --dry-run lists them without changing anything.")
    p = add("resume", "resume failed, cancelled or timed-out runs from where they failed (same run id)",
            "Completed steps replay from the history; the failed step or child, and what follows it, run again. "
            + bulk)
    _bulk_args(p, "failed or cancelled (timed-out runs are failed)")
    p = add("restart", "start a new run with the same workflow and input as a run", bulk)
    _bulk_args(p, "any status")
    p = add("fork", "start a new run whose history is the first N events of a run's (durable show numbers them)",
            "The operations after N run again; children finished within the first N keep their outcome.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--at", type=int, required=True, metavar="N", help="keep the first N history events (0: none)")


def _bulk_args(p: argparse.ArgumentParser, statuses: str) -> None:
    p.add_argument("run", metavar="RUN", nargs="?", help="one run (or select runs with --status)")
    p.add_argument("--status", action="append", default=[], help=f"select runs with this status ({statuses}; "
                                                                 "repeatable, or a,b)")
    p.add_argument("--workflow", help="only workflows matching this glob (e.g. 'orders.*')")
    p.add_argument("--since", metavar="DURATION", help="only runs created within this (e.g. 1h)")
    p.add_argument("--limit", type=int, default=100, help="at most this many runs (default 100)")
    p.add_argument("--dry-run", action="store_true", help="list the runs that would be re-driven; change nothing")


def _statuses(args: argparse.Namespace, allowed: tuple[str, ...]) -> list[str]:
    got = [s.strip() for raw in args.status for s in raw.split(",") if s.strip()]
    bad = [s for s in got if s not in allowed]
    if bad:
        raise CliError(USAGE, f"--status {bad[0]!r} cannot be chosen here; choose from {', '.join(allowed)}")
    return got


async def _select(e: Engine, args: argparse.Namespace, allowed: tuple[str, ...]) -> list[RedriveCandidate] | None:
    """The runs a bulk form takes (None: one RUN was given)."""
    statuses = _statuses(args, allowed)
    if args.run is not None:
        if statuses or args.workflow or args.since or args.dry_run:
            raise CliError(USAGE, "give either RUN or a selection (--status, --workflow, --since, --dry-run), "
                                  "not both")
        return None
    if not statuses:
        raise CliError(USAGE, f"give RUN, or select runs with --status ({', '.join(allowed)})")
    if args.limit < 1:
        raise CliError(USAGE, f"--limit must be at least 1, got {args.limit}")
    since_s = seconds(args.since, "--since")
    since = datetime.now(timezone.utc) - timedelta(seconds=since_s) if since_s is not None else None
    assert e.pool is not None
    return await redrive.candidates(e.pool, statuses=statuses, workflow=args.workflow, since=since, limit=args.limit)


async def _redrive(args: argparse.Namespace, out: Out, verb: str, allowed: tuple[str, ...],
                   act: Callable[[Engine, uuid.UUID], Any]) -> int:
    async with engine(args) as e:
        picked = await _select(e, args, allowed)
        if picked is None:  # one run: errors are the command's
            rid = run_id(args.run)
            handle: RunHandle[Any] = await act(e, rid)
            if out.json_mode:
                out.json({"run_id": rid, "action": verb, "new_run_id": handle.run_id})
            elif handle.run_id == rid:
                out.print(f"{verb} run {rid} (durable wait {rid})")
            else:
                out.print(f"{verb} run {rid} as run {handle.run_id} (durable wait {handle.run_id})")
            return OK
        results: list[dict[str, Any]] = []
        started = time.monotonic()
        for c in picked:
            row: dict[str, Any] = {"run_id": c.id, "workflow": c.workflow, "status": c.status,
                                   "error": error_line(c.error) if c.error else None}
            if not args.dry_run:
                try:
                    row["new_run_id"] = (await act(e, c.id)).run_id
                except DurableError as exc:  # raced with another re-drive, or with retention
                    row["refused"] = str(exc)
            results.append(row)
    failed = sum(1 for r in results if "refused" in r)
    if out.json_mode:
        out.json({"action": verb, "dry_run": args.dry_run, "runs": results, "refused": failed})
        return FAILED if failed else OK
    if not results:
        out.print("no runs match")
        return OK
    out.table(["RUN", "WORKFLOW", "STATUS", "ERROR", "NOW"],
              [[str(r["run_id"]), r["workflow"], out.status(r["status"]), (r["error"] or "")[:60],
                "(dry run)" if args.dry_run else r.get("refused", "")[:80] or
                ("resumed" if r.get("new_run_id") == r["run_id"] else f"new run {r.get('new_run_id')}")]
               for r in results])
    done = len(results) - failed
    if args.dry_run:
        out.print(f"{len(results)} run(s) would be {verb}; run again without --dry-run to do it")
    else:
        out.print(f"{verb} {done} run(s)" + (f", {failed} refused" if failed else "")
                  + f" in {time.monotonic() - started:.1f} s")
    return FAILED if failed else OK


async def cmd_resume(args: argparse.Namespace, out: Out) -> int:
    return await _redrive(args, out, "resumed", _RESUMABLE, lambda e, rid: e.resume(rid))


async def cmd_restart(args: argparse.Namespace, out: Out) -> int:
    return await _redrive(args, out, "restarted", _ANY_STATUS, lambda e, rid: e.restart(rid))


async def cmd_fork(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    async with engine(args) as e:
        handle = await e.fork(rid, at=args.at)
    if out.json_mode:
        out.json({"run_id": rid, "action": "forked", "at": args.at, "new_run_id": handle.run_id})
    else:
        out.print(f"forked run {rid} at {args.at} as run {handle.run_id} (durable wait {handle.run_id})")
    return OK
