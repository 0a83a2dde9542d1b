"""``durable schedules list|describe|create|pause|resume|trigger|delete|backfill``: the
schedules of ``engine.schedules`` from the command line (registered in
:mod:`durable.cli.commands`)."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime
from typing import Any

from ..durations import duration
from ..errors import ScheduleNotFoundError
from ..ticks import OVERLAP_POLICIES
from ..store.rows import Schedule
from .common import NOT_FOUND, USAGE, CliError, engine, import_modules, parse_json, seconds
from .output import Out

ACTIONS = ("list", "describe", "create", "pause", "resume", "trigger", "delete", "backfill")


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """The ``schedules`` subcommand's own subcommands."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    s = add("list", "list schedules")
    s.add_argument("--workflow", help="only schedules of this workflow")
    s = add("describe", "show a schedule, its next fire times and its latest runs")
    s.add_argument("id")
    s.add_argument("--next", type=int, default=5, metavar="N", help="next fire times to show (default 5)")
    s.add_argument("--last", type=int, default=5, metavar="N", help="latest runs to show (default 5)")
    s = add("create", "create a schedule (again with the same workflow: change it)")
    s.add_argument("id")
    s.add_argument("workflow", help="the workflow's registered name")
    when = s.add_mutually_exclusive_group()
    when.add_argument("--cron", help="cron expression: 5 fields, or 6 with seconds first (e.g. '0 3 * * *')")
    when.add_argument("--every", metavar="DURATION", help="a fixed interval, e.g. 30s, 5m, 1h")
    s.add_argument("--timezone", default="UTC", help="IANA zone for --cron (default UTC), e.g. Europe/Berlin")
    s.add_argument("--overlap", default="skip", choices=OVERLAP_POLICIES,
                   help="when the previous run is still going (default skip)")
    s.add_argument("--catchup-window", default="1h", metavar="DURATION",
                   help="fire the latest tick missed while no dispatcher ran if it is this recent (default 1h)")
    s.add_argument("--input", "-i", help="input as JSON, @file.json, or - for stdin")
    s.add_argument("--queue", help="queue (default: the workflow's, or 'default')")
    s.add_argument("--paused", action="store_true", help="create it paused")
    s.add_argument("--module", "-m", action="append", default=[],
                   help="import this module first, to check the input against the workflow (repeatable)")
    s = add("pause", "stop firing a schedule")
    s.add_argument("id")
    s.add_argument("--note", default="", help="why (shown by describe)")
    s = add("resume", "fire a paused schedule again, from its next tick")
    s.add_argument("id")
    s = add("trigger", "start a run of a schedule now")
    s.add_argument("id")
    s = add("delete", "delete a schedule (its runs stay)")
    s.add_argument("id")
    s = add("backfill", "start one run per tick in a past range (a tick that ran already is not started again)")
    s.add_argument("id")
    s.add_argument("--from", dest="start", required=True, metavar="TIME",
                   help="ISO time, e.g. 2026-01-01T00:00:00Z (no offset: UTC)")
    s.add_argument("--to", dest="end", required=True, metavar="TIME", help="ISO time, inclusive")


def _time(text: str, flag: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(USAGE, f"{flag} {text!r} is not an ISO time; write e.g. 2026-01-01T03:00:00Z") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _when(s: Schedule) -> str:
    return f"cron {s.cron} ({s.timezone})" if s.cron is not None else f"every {duration(s.every_s)}"


def _doc(s: Schedule) -> dict[str, Any]:
    return dataclasses.asdict(s)


async def cmd_schedules(args: argparse.Namespace, out: Out) -> int:
    try:
        return await _run(args, out)
    except ScheduleNotFoundError as exc:
        raise CliError(NOT_FOUND, str(exc)) from None


async def _run(args: argparse.Namespace, out: Out) -> int:
    a = args.action
    if a == "create":
        import_modules(args.module)
        value = parse_json(args.input, "input JSON")
        window = seconds(args.catchup_window, "--catchup-window")
        every = seconds(args.every, "--every")
        async with engine(args) as e:
            s = await e.schedules.create(args.id, args.workflow, value, cron=args.cron, every=every,
                                         timezone=args.timezone, overlap=args.overlap,
                                         catchup_window=window if window is not None else 3600.0, queue=args.queue,
                                         paused=args.paused)
        if out.json_mode:
            out.json(_doc(s))
        else:
            out.print(f"created schedule {s.id!r}: {_when(s)} starts {s.workflow}; next {s.next_fire_at.isoformat()}"
                      + (" (paused)" if s.paused else ""))
        return 0
    if a == "backfill":
        start, end = _time(args.start, "--from"), _time(args.end, "--to")
        async with engine(args) as e:
            res = await e.schedules.backfill(args.id, start, end)
        if out.json_mode:
            out.json({"id": args.id, "ticks": res.ticks, "started": res.started, "existing": res.existing})
        else:
            out.print(f"schedule {args.id!r}: {res.ticks} tick(s) from {start.isoformat()} to {end.isoformat()}, "
                      f"{len(res.started)} started, {res.existing} had run already")
        return 0
    async with engine(args) as e:
        if a == "list":
            rows = await e.schedules.list(workflow=args.workflow)
            if out.json_mode:
                out.json({"schedules": [_doc(s) for s in rows]})
            else:
                out.table(["ID", "WORKFLOW", "WHEN", "OVERLAP", "STATE", "NEXT", "FIRED"],
                          [[s.id, s.workflow, _when(s), s.overlap, "paused" if s.paused else "active",
                            "-" if s.paused else s.next_fire_at.isoformat(), str(s.fired)] for s in rows])
            return 0
        if a == "describe":
            d = await e.schedules.describe(args.id, next_n=args.next, last_n=args.last)
            if out.json_mode:
                out.json({"schedule": _doc(d.schedule), "next_fires": d.next_fires,
                          "recent_runs": [dataclasses.asdict(r) for r in d.recent_runs]})
                return 0
            s = d.schedule
            out.print(f"schedule {s.id!r}: {_when(s)} starts {s.workflow} on queue {s.queue}")
            out.print(f"  state      {'paused' + (': ' + s.note if s.note else '') if s.paused else 'active'}")
            out.print(f"  overlap    {s.overlap}; catch-up window {duration(s.catchup_window_s)}")
            out.print(f"  counts     {s.fired} fired, {s.skipped} skipped (overlap), {s.missed} missed")
            out.print("  next       " + ", ".join(t.isoformat() for t in d.next_fires))
            if d.recent_runs:
                out.print("  latest runs:")
                out.table(["  RUN", "TICK", "STATUS"], [[f"  {r.run_id}", r.tick.isoformat() if r.tick else "trigger",
                                                         out.status(r.status)] for r in d.recent_runs])
            return 0
        if a == "pause":
            await e.schedules.pause(args.id, note=args.note)
            verb = "paused"
        elif a == "resume":
            s = await e.schedules.resume(args.id)
            verb = f"resumed; next tick {s.next_fire_at.isoformat()}"
        elif a == "delete":
            await e.schedules.delete(args.id)
            verb = "deleted"
        else:
            run = await e.schedules.trigger(args.id)
            if out.json_mode:
                out.json({"id": args.id, "run_id": run})
            else:
                out.print(f"schedule {args.id!r}: started run {run} (durable wait {run})")
            return 0
    if out.json_mode:
        out.json({"id": args.id, "action": a})
    else:
        out.print(f"schedule {args.id!r} {verb}")
    return 0
