"""The operator CLI: ``durable migrate|start|runs|count|show|tree|wait|cancel|signal|gc|demo|workers|workflows|embedded|resume|restart|fork|schedules|export|ui``.

Human output by default (aligned tables, trees, colours on a terminal unless NO_COLOR is
set); ``--json`` prints one JSON document for scripts. Exit codes are listed in
:data:`EXIT_CODES` and in ``durable --help``. The read-only views (runs, count, show, tree) live
in ``durable.cli.inspect``, output formatting in ``durable.cli.output``, the demo in
``durable.cli.demo``, what the commands share in ``durable.cli.common``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import traceback
import uuid
import warnings
from typing import Any, TextIO

import psycopg
from pydantic_core import to_jsonable_python

from ..errors import (AmbiguousRunIdError, ConfigurationError, DatabaseUnavailableError, DurableError, ForkPositionError,
                      PayloadError, RegistrationError, RunCancelledError, RunFailedError, RunFinishedError,
                      RunNotFoundError, RunNotResumableError, RunTimeoutError, SchemaVersionError,
                      SearchAttributeError, WorkflowNotFoundError)
from ..durations import FORMS, duration
from ..store import migrate, retention
from . import export as cli_export
from . import inspect as cli_inspect
from . import redrive as cli_redrive
from . import registry as cli_registry
from . import schedules as cli_schedules
from . import ui as cli_ui
from .common import (CLOSED_STDOUT, DB_UNAVAILABLE, EXIT_CODES, FAILED, NOT_FOUND, OK, TIMEOUT, USAGE, CliError,
                     connection, duration_type, engine, expand_run_ids, import_modules, parse_json, run_id, seconds,
                     settings)
from .demo import run_demo
from .embedded import cmd_embedded
from .output import Out, error_line

# --- commands -------------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace, out: Out) -> int:
    s = settings(args)
    async with connection(args, check=False) as conn:
        before = await migrate.schema_version(conn, s.schema_name)
        version = await migrate.migrate(conn, s.schema_name)
    applied = [m.version for m in migrate.available_migrations() if before is None or m.version > before]
    if out.json_mode:
        out.json({"schema": s.schema_name, "version": version, "previous_version": before, "applied": applied})
    elif applied:
        out.print(f"schema {s.schema_name}: applied migration(s) {', '.join(map(str, applied))}; now at version {version}")
    else:
        out.print(f"schema {s.schema_name} is up to date (version {version})")
    return OK


async def _report_outcome(e: Any, rid: uuid.UUID, timeout: float | None, out: Out) -> int:
    try:
        result = await e.result(rid, timeout=timeout)
    except RunTimeoutError:
        raise CliError(TIMEOUT, f"run {rid} did not finish within {duration(timeout)}; it keeps running "
                                "(wait again, or cancel it)") from None
    except (RunFailedError, RunCancelledError) as exc:
        status = "failed" if isinstance(exc, RunFailedError) else "cancelled"
        error = exc.error if isinstance(exc, RunFailedError) else {"type": "Cancelled", "reason": exc.reason}
        if out.json_mode:
            out.json({"run_id": rid, "status": status, "result": None, "error": error})
        else:
            out.err(f"run {rid} {status}: {error_line(error)}")
        return FAILED
    result = to_jsonable_python(result)  # typed results (pydantic models) when the workflow is imported
    if out.json_mode:
        out.json({"run_id": rid, "status": "completed", "result": result, "error": None})
    else:
        out.print(json.dumps(result, indent=2, default=str))
    return OK


async def cmd_start(args: argparse.Namespace, out: Out) -> int:
    import_modules(args.module)
    value = parse_json(args.input, "input JSON")
    exec_timeout = seconds(args.execution_timeout, "--execution-timeout")
    wait_timeout = seconds(args.timeout, "--timeout")
    if args.execute and not args.wait:
        raise CliError(USAGE, "--execute runs the workflow in this process while it waits: add --wait")
    async with engine(args, execute=args.execute) as e:
        try:
            handle = await e.start(args.workflow, value, key=args.key, queue=args.queue, timeout=exec_timeout)
        except WorkflowNotFoundError as exc:
            raise CliError(USAGE, f"{exc} With the CLI: --module/-m MODULE or DURABLE_MODULES=MODULE imports it "
                                  "here.") from None
        info = await handle.info()
        if not args.wait:
            if out.json_mode:
                out.json({"run_id": handle.run_id, "workflow": info.workflow, "queue": info.queue,
                          "status": info.status})
            else:
                out.print(f"started run {out.c(str(handle.run_id), 'bold')} ({info.workflow}, queue {info.queue}, "
                          f"{out.status(info.status)})")
            return OK
        if not args.execute and not await e.workers_serving(info.queue, info.workflow, info.version):
            out.err(f"warning: no live worker serves queue {info.queue!r} for workflow {info.workflow!r} version "
                    f"{info.version}: the run waits until one starts (durable workers lists them; start one with "
                    f"durable-dispatcher --module MODULE --queues {info.queue}, or pass --execute)")
        if not out.json_mode:
            out.err(f"started run {handle.run_id} ({info.workflow}); waiting for it…")
        return await _report_outcome(e, handle.run_id, wait_timeout, out)


async def cmd_wait(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    timeout = seconds(args.timeout, "--timeout")
    async with engine(args) as e:
        return await _report_outcome(e, rid, timeout, out)


async def cmd_cancel(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    async with engine(args) as e:
        before = (await e.info(rid)).status
        n = await e.cancel(rid, graceful=args.graceful, reason=args.reason)
        after = (await e.info(rid)).status
    if out.json_mode:
        out.json({"run_id": rid, "graceful": args.graceful, "cancelled": n, "status_before": before, "status": after})
    elif args.graceful and before in ("pending", "running", "suspended"):
        out.print(f"asked run {rid} to cancel; it ends as cancelled after its cleanup (durable wait {rid})")
    elif n:
        out.print(f"cancelled run {rid}" + (f" and {n - 1} descendant(s)" if n > 1 else ""))
    else:
        out.print(f"run {rid} had already {out.status(after)}; nothing to cancel")
    return OK


async def cmd_signal(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    payload = parse_json(args.payload, "payload JSON")
    async with engine(args) as e:
        try:
            delivered = await e.signal(rid, args.name, payload, delivery_id=args.delivery_id)
        except RunFinishedError as exc:
            raise CliError(FAILED, str(exc)) from None
    if out.json_mode:
        out.json({"run_id": rid, "signal": args.name, "delivered": delivered})
    elif delivered:
        out.print(f"signal {args.name!r} sent to run {rid}")
    else:
        out.print(f"signal {args.name!r} with delivery id {args.delivery_id!r} was already delivered; not sent again")
    return OK


async def cmd_gc(args: argparse.Namespace, out: Out) -> int:
    age = seconds(args.older_than, "--older-than")
    assert age is not None  # a required flag
    async with connection(args) as conn:
        res = await retention.gc(conn, age, batch=args.batch, max_batches=args.max_batches, dry_run=args.dry_run)
    if out.json_mode:
        out.json({"older_than_s": age, **res.as_dict()})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        out.print(f"{verb} {res.runs} run(s) finished more than {duration(age)} ago, with {res.events} event(s) "
                  f"and {res.signals} signal(s), in {res.batches} batch(es) ({duration(res.seconds)})")
    return OK


async def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    return await run_demo(args.dsn, args.schema, out, connect_timeout=args.connect_timeout)


# --- parser ---------------------------------------------------------------------------------


def _globals(p: argparse.ArgumentParser, default: Any) -> None:
    d = (lambda v: v) if default is None else (lambda v: argparse.SUPPRESS)
    p.add_argument("--dsn", default=d(None), help="PostgreSQL DSN (default: env DURABLE_DSN, else embedded PostgreSQL)")
    p.add_argument("--schema", default=d(None), help="durable's schema (default: env DURABLE_SCHEMA, else 'durable')")
    p.add_argument("--json", action="store_true", default=d(False), help="print one JSON document (for scripts)")
    p.add_argument("--connect-timeout", type=duration_type, default=d(10.0), metavar="DURATION",
                   help="how long to wait for the database (default 10s)")
    p.add_argument("-v", "--verbose", action="store_true", default=d(False), help="log what durable does")
    p.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks of unexpected errors")


def _run_filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", action="append", default=[], help="only these statuses (repeatable, or a,b)")
    p.add_argument("--workflow", help="only this workflow (* matches anything)")
    p.add_argument("--queue", help="only this queue")
    p.add_argument("--parent", metavar="RUN", help="only children of this run")
    p.add_argument("--root", metavar="RUN", help="only runs of the tree rooted at this run")
    p.add_argument("--top-level", action="store_true", help="only runs without a parent")
    p.add_argument("--older-than", metavar="DURATION", help="only runs created longer ago than this")
    p.add_argument("--newer-than", metavar="DURATION", help="only runs created within this")


# --- listing and searching runs (issue 14) ----------------------------------------------
def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose search attribute KEY is (or, for a list, holds) VALUE (repeatable)")
    p.add_argument("--since", metavar="DURATION", help="only runs created within this (e.g. 1h)")


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {k:>3}  {v}" for k, v in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="durable", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Operate durable workflows: migrate, start, list, inspect, wait for, cancel, signal, gc, "
                    "resume, restart, fork; serve the web console (ui).",
        epilog=f"exit codes:\n{codes}\n\nDurations (every flag): {FORMS}.\n"
               "Run ids: the full id or a unique prefix of at least 4 hex digits (hyphens optional).\n"
               "Environment: DURABLE_DSN, DURABLE_SCHEMA, DURABLE_MODULES, NO_COLOR.")
    _globals(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _globals(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, more: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help + (". " + more if more else ""),
                              parents=[common])

    add("migrate", "create or upgrade durable's schema")
    p = add("start", "start a run of a registered workflow",
            "A name a worker registered (durable workflows lists them) starts without --module: the input is "
            "checked against the registered JSON schema.")
    p.add_argument("workflow", help="the workflow's registered name")
    p.add_argument("--input", "-i", help="input as JSON, @file.json, or - for stdin")
    p.add_argument("--module", "-m", action="append", default=[],
                   help="import this module first (repeatable; also env DURABLE_MODULES)")
    p.add_argument("--key", help="idempotency key: starting twice with one key returns the same run")
    p.add_argument("--queue", help="queue (default: the workflow's)")
    p.add_argument("--execution-timeout", metavar="DURATION", help="fail the run if it takes longer")
    p.add_argument("--wait", action="store_true", help="wait for the result and exit by outcome (like `wait`)")
    p.add_argument("--timeout", metavar="DURATION", help="with --wait: give up waiting after this long")
    p.add_argument("--execute", action="store_true", help="with --wait: execute the run in this process")
    p = add("runs", "list runs, newest first")
    _run_filter_args(p)
    _search_args(p)
    p.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    p.add_argument("--cursor", help="the next page, as printed by the previous one")
    p = add("count", "count runs (the filters of `durable runs`)")
    _run_filter_args(p)
    _search_args(p)
    p = add("show", "show a run: status, input, result or error, lease, timing, history")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--events", type=int, default=200, metavar="N", help="history events to show (default 200)")
    p.add_argument("--full", action="store_true", help="do not shorten payloads; show tracebacks")
    p = add("tree", "show a run's descendants as a tree (following continue-as-new)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--limit", type=int, default=1000, help="at most this many runs (default 1000)")
    p.add_argument("--all", action="store_true", help="list every child (default: more than 20 under one parent "
                                                      "are shown as groups with counts by status)")
    p = add("wait", "wait for a run's result and exit by its outcome")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--timeout", metavar="DURATION", help="give up after this long (exit code 5)")
    p = add("cancel", "cancel a run and its in-flight descendants")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--graceful", action="store_true", help="ask the run to cancel itself (it may clean up)")
    p.add_argument("--reason", default="cancelled", help="recorded in the run's error (default 'cancelled')")
    p = add("signal", "send a signal to a run")
    p.add_argument("run", metavar="RUN")
    p.add_argument("name", help="the signal's name")
    p.add_argument("--payload", "-p", help="payload as JSON, @file.json, or - for stdin")
    p.add_argument("--delivery-id", help="deduplicate: a second signal with this id is not delivered")
    p = add("gc", "delete finished runs older than a duration, with their history",
            "A run goes once it and everything below it finished before the cutoff, its continue-as-new chain "
            "is all finished, no live run waits on it, and none of its ancestors is still pending, running or "
            "suspended. Batches are bounded and skip rows other collectors hold.")
    p.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 7d")
    p.add_argument("--batch", type=int, default=retention.DEFAULT_BATCH, help="runs per batch (default 500)")
    p.add_argument("--max-batches", type=int, help="stop after this many batches")
    p.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    add("demo", "run a small demo workflow (embedded PostgreSQL when no DSN is set)")
    # --- the registry's views (issue 14) ---
    p = add("workers", "list the processes executing runs: host, pid, queues, workflows, concurrency, last seen",
            "A process beats every lease-ttl/3 seconds; one that stopped, or stopped beating, shows as expired.")
    p.add_argument("--alive", action="store_true", help="only live processes")
    add("workflows", "list the workflows the workers registered (startable by name: durable start NAME)")
    p = add("embedded", "status or stop of the embedded PostgreSQL (used when no DSN is set)",
            "It keeps running after the process that started it, for the next one; both actions succeed "
            "when none is running.")
    p.add_argument("action", choices=("status", "stop"), help="status: data dir, port, pid, running or not; "
                                                              "stop: stop it (fast shutdown)")
    p.add_argument("--data-dir", metavar="DIR", help="its data folder (default: env DURABLE_DATA_DIR, else "
                                                     "the user data dir, e.g. ~/.local/share/durable/pg)")
    cli_redrive.add_parsers(add)  # resume, restart, fork (durable/cli/redrive.py)
    # --- issue 15: a run's history for durable.testing.Replayer ---
    p = add("export", "print a run's history as a JSON document (durable export RUN > run.json)",
            "Replay it against new code with durable.testing.Replayer before a deploy.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--output", "-o", metavar="FILE", help="write the document to FILE instead of stdout")
    # schedules (issue 15): durable schedules list|describe|create|pause|resume|trigger|delete|backfill
    cli_schedules.add_arguments(add("schedules", "list, create and operate schedules (one run per tick)"), common)
    # --- issue 16: the web console ---
    cli_ui.add_parser(add)  # durable ui (durable/cli/ui.py)
    return parser


def command(name: str) -> Any:
    """The coroutine function of a subcommand (the read-only views live in cli_inspect)."""
    if name in ("runs", "count", "show", "tree"):
        return getattr(cli_inspect, f"cmd_{name}")
    if name in ("workers", "workflows"):  # the registry's views (issue 14)
        return getattr(cli_registry, f"cmd_{name}")
    if name in ("resume", "restart", "fork"):
        return getattr(cli_redrive, f"cmd_{name}")
    if name == "export":
        return cli_export.cmd_export
    if name == "schedules":
        return cli_schedules.cmd_schedules
    if name == "ui":  # issue 16
        return cli_ui.cmd_ui
    return globals()[f"cmd_{name}"]


async def _run(args: argparse.Namespace, out: Out) -> int:
    await expand_run_ids(args)  # unique prefixes of run ids -> full ids (durable.cli.common.RUN_ARGS)
    code: int = await command(args.command)(args, out)
    return code


def _closed_stdout(out: Out) -> int:
    """The reader of stdout went away (``durable runs | head``): stop quietly, the Unix way.
    Later writes (the interpreter's last flush) go to /dev/null instead of raising again."""
    if out.stdout is sys.stdout:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return CLOSED_STDOUT


def _exit_for(exc: BaseException) -> int | None:
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, RunNotFoundError):
        return NOT_FOUND
    if isinstance(exc, (ConfigurationError, PayloadError, WorkflowNotFoundError, RegistrationError,
                        AmbiguousRunIdError, SearchAttributeError, ForkPositionError, RunNotResumableError)):
        return USAGE
    if isinstance(exc, (DatabaseUnavailableError, SchemaVersionError, psycopg.OperationalError)):
        return DB_UNAVAILABLE
    if isinstance(exc, RunTimeoutError):
        return TIMEOUT
    if isinstance(exc, DurableError):
        return FAILED
    return None


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    err = stderr or sys.stderr
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return int(exc.code or 0)
    out = Out(stdout, stderr, json_mode=args.json)
    # embedded PostgreSQL's platformdirs warns on hosts without XDG_RUNTIME_DIR: noise for a CLI user
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="durable: %(message)s")
    try:
        return asyncio.run(_run(args, out))
    except BrokenPipeError:
        return _closed_stdout(out)
    except KeyboardInterrupt:
        out.err("interrupted")
        return 130
    except Exception as exc:
        known = _exit_for(exc)
        if known is None:
            out.err(f"durable {args.command}: unexpected error: {type(exc).__name__}: {exc}"
                    + ("" if args.debug else " (--debug shows the traceback)"))
            if args.debug:
                out.err(traceback.format_exc())
            return FAILED
        message = exc.message if isinstance(exc, CliError) else str(exc)
        if isinstance(exc, psycopg.OperationalError):
            message = f"lost the database connection: {exc}"
        if out.json_mode:
            out.json({"error": message, "exit_code": known})
        prefix = "\x1b[31merror:\x1b[0m " if out.err_color else "error: "
        out.err(prefix + message)
        return known

