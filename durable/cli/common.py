"""What the CLI's commands share: exit codes, argument parsing helpers, database access."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..config import EngineSettings
from ..durations import parse_duration
from ..engine import Engine
from ..errors import AmbiguousRunIdError, ConfigurationError, RunNotFoundError
from ..store import connections as db
from ..store import inspect as store_inspect
from ..store import migrate
from ..store.connections import Conn

OK, FAILED, USAGE, NOT_FOUND, DB_UNAVAILABLE, TIMEOUT = 0, 1, 2, 3, 4, 5
CLOSED_STDOUT = 128 + signal.SIGPIPE  # 141, as a shell reports a process killed by SIGPIPE
EXIT_CODES = {
    OK: "success",
    FAILED: "the run failed or was cancelled (wait, start --wait), or a signal went to a finished run",
    USAGE: "bad usage or input (arguments, JSON, durations, run ids, unknown workflow)",
    NOT_FOUND: "no such run",
    DB_UNAVAILABLE: "database unreachable, or the schema is not migrated",
    TIMEOUT: "wait timed out (the run goes on)",
    CLOSED_STDOUT: "the reader of the output went away (`durable runs | head`): stopped quietly, as coreutils do",
}
STATUSES = ("pending", "running", "suspended", "completed", "failed", "cancelled", "continued")


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- argument helpers -------------------------------------------------------------------


def run_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except (ValueError, AttributeError):
        raise CliError(USAGE, f"{text!r} is not a run id: give a run's id, e.g. "
                              "3f2b9c1e-8d4a-4f0e-9b7c-2a1d5e6f7a8b, or a unique prefix of at least "
                              f"{MIN_PREFIX} hex digits such as 3f2b9c1e (list them with `durable runs`)") from None


# --- run id prefixes ---------------------------------------------------------------------

# The arguments that take a run id (any command's, by their dest): a full id or a unique
# prefix of it (at least MIN_PREFIX hex digits, hyphens optional), expanded to the full id
# before the command runs (expand_run_ids), so commands read them with run_id().
RUN_ARGS = ("run", "runs", "run_id", "parent", "root")
MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")


def id_prefix(text: str) -> str:
    """The hex digits of a run id prefix (lowercase, no hyphens); CliError if it is not one."""
    digits = text.strip().lower().replace("-", "")
    if not _HEX.match(digits) or not MIN_PREFIX <= len(digits) <= 32:
        run_id(text)  # raises the error that shows what a run id looks like
    return digits


def _is_full_id(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True


async def expand_prefix(conn: Conn, text: str) -> uuid.UUID:
    """The one run whose id starts with ``text``; RunNotFoundError if none does,
    AmbiguousRunIdError (listing a few) if several do."""
    ids = await store_inspect.runs_by_prefix(conn, id_prefix(text), 6)
    if not ids:
        raise RunNotFoundError(text.strip())
    if len(ids) > 1:
        raise AmbiguousRunIdError(text.strip(), ids)
    return ids[0]


async def expand_run_ids(args: argparse.Namespace) -> None:
    """Replace the run id prefixes among ``args`` (RUN_ARGS: text or lists of text) by the
    full ids, with one connection when there is any prefix and none otherwise."""
    def listed(value: Any) -> list[Any]:
        return value if isinstance(value, list) else [value]

    def is_prefix(v: Any) -> bool:
        return isinstance(v, str) and not _is_full_id(v) and bool(id_prefix(v))  # bad text: CliError here

    names = [n for n in RUN_ARGS if any([is_prefix(v) for v in listed(getattr(args, n, None))])]
    if not names:
        return
    async with connection(args) as conn:
        for name in names:
            value = getattr(args, name)
            full = [str(await expand_prefix(conn, v)) if is_prefix(v) else v for v in listed(value)]
            setattr(args, name, full if isinstance(value, list) else full[0])


# --- other argument helpers ----------------------------------------------------------------


def parse_json(text: str | None, what: str) -> Any:
    """JSON from the argument, ``@path`` (a file) or ``-`` (stdin); None when not given."""
    if text is None:
        return None
    source = text
    if text == "-":
        source = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                source = f.read()
        except OSError as exc:
            raise CliError(USAGE, f"{what}: cannot read {text[1:]!r}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise CliError(USAGE, f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                              f"{source[:80]!r}. Quote it for the shell, e.g. --{what.split()[0]} "
                              "'{\"order_id\": 42}'") from None


def duration_type(text: str) -> float:
    """argparse ``type=`` of a flag taking a duration (argparse names the flag in its error)."""
    try:
        return parse_duration(text, "the value")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text, what)
    except ConfigurationError as exc:
        raise CliError(USAGE, str(exc)) from None


def import_modules(names: list[str]) -> list[str]:
    """Import the modules defining workflows (--module and DURABLE_MODULES)."""
    env = os.environ.get("DURABLE_MODULES", "")
    wanted = [m for m in names] + [m for m in env.replace(",", " ").split() if m]
    if wanted and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to you are importable
    for name in dict.fromkeys(wanted):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise CliError(USAGE, f"could not import workflow module {name!r} (from --module or DURABLE_MODULES): "
                                  f"{type(exc).__name__}: {exc}") from None
    return wanted


# --- database access --------------------------------------------------------------------


def settings(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings.build(dsn=args.dsn, schema=args.schema, connect_timeout_s=args.connect_timeout)


@contextlib.asynccontextmanager
async def connection(args: argparse.Namespace, *, check: bool = True) -> AsyncIterator[Conn]:
    s = settings(args)
    dsn = await db.resolve_dsn(s.dsn, data_dir=s.data_dir)
    conn = await db.connect(dsn, schema=s.schema_name, timeout=s.connect_timeout_s)
    try:
        if check:
            await migrate.check_schema(conn, s.schema_name)
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def engine(args: argparse.Namespace, *, execute: bool = False) -> AsyncIterator[Engine]:
    e = Engine(args.dsn, schema=args.schema, execute=execute, migrate=False, pool_size=3, metrics=False,
               connect_timeout_s=args.connect_timeout)
    async with e:
        yield e


