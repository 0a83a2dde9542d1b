"""Dispatcher settings: command-line flags, then DURABLE_* environment variables, then
defaults, validated by one pydantic model so every bad value gets a clear message."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from durable.config import EngineSettings
from durable.store.connections import validate_dsn
from durable.durations import parse_duration
from durable.errors import ConfigurationError

DEFAULT_METRICS_PORT = 9464


class DispatcherSettings(BaseModel):
    """Everything a dispatcher process needs. Build it with :func:`load_settings` (flags
    and environment) or directly in Python."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dsn: str | None = Field(None, description="PostgreSQL DSN; none = embedded PostgreSQL")
    schema_name: str = Field("durable", description="schema holding durable's tables")
    modules: tuple[str, ...] = Field(..., min_length=1, description="modules to import so workflows register")
    queues: tuple[str, ...] = Field(("default",), description="queues to serve")
    concurrency: int = Field(100, ge=1, le=100_000, description="max runs executing at once")
    lease_ttl_s: float = Field(30.0, gt=0.5, le=3600, description="lease duration in seconds")
    poll_interval_s: float = Field(2.0, gt=0.0, le=300, description="fallback poll interval in seconds")
    shutdown_grace_s: float = Field(10.0, ge=0, le=3600, description="grace period on SIGTERM in seconds")
    pool_size: int = Field(10, ge=1, le=1000, description="max database connections in the pool")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="bound on one connection attempt")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="address of /metrics, /healthz, /readyz")
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=65535, description="port (0 = pick a free one)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    no_wait: bool = Field(False, description="fail at once when the database is unreachable at start")
    retention_s: float | None = Field(None, gt=0, description="delete finished runs older than this")

    @field_validator("retention_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return parse_duration(v)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("dsn")
    @classmethod
    def _dsn_ok(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                validate_dsn(v)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("modules", "queues", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, (list, tuple)):
            out: list[str] = []
            for item in v:
                out.extend(p.strip() for p in str(item).split(",") if p.strip())
            return tuple(dict.fromkeys(out))
        return v

    @field_validator("modules")
    @classmethod
    def _modules_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            if not all(part.isidentifier() for part in m.split(".")):
                raise ValueError(f"{m!r} is not an importable module path (e.g. myapp.workflows)")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    def engine_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`durable.Engine` (validated by EngineSettings too)."""
        kwargs = dict(schema=self.schema_name, execute=True, queues=self.queues,
                      concurrency=self.concurrency, lease_ttl_s=self.lease_ttl_s,
                      poll_interval_s=self.poll_interval_s, pool_size=self.pool_size,
                      connect_timeout_s=self.connect_timeout_s, retention_s=self.retention_s)
        EngineSettings.build(dsn=self.dsn, **kwargs)  # raises ConfigurationError on a bad combination
        return kwargs


@dataclass(frozen=True)
class _Opt:
    field: str
    flags: tuple[str, ...]
    env: str
    help: str
    kind: str = "value"  # 'value' | 'list' | 'flag'
    metavar: str | None = None


# One row per setting: the flag, its environment variable, and the help text.
OPTIONS: tuple[_Opt, ...] = (
    _Opt("modules", ("-m", "--module"), "DURABLE_MODULES",
         "Python module to import so its workflows register (repeat, or comma-separate). Required. "
         "The current directory is importable.", "list", "MODULE"),
    _Opt("dsn", ("--dsn",), "DURABLE_DSN",
         "PostgreSQL DSN, e.g. postgresql://user:pass@host:5432/db. Default: an embedded PostgreSQL "
         "(pip install 'durable[embedded]').", metavar="DSN"),
    _Opt("schema_name", ("--schema",), "DURABLE_SCHEMA", "Schema holding durable's tables. Default: durable.",
         metavar="NAME"),
    _Opt("queues", ("-q", "--queue"), "DURABLE_QUEUES",
         "Queue to serve (repeat, or comma-separate). Default: default.", "list", "QUEUE"),
    _Opt("concurrency", ("-c", "--concurrency"), "DURABLE_CONCURRENCY",
         "Max runs executing at once in this process. Default: 100.", metavar="N"),
    _Opt("lease_ttl_s", ("--lease-ttl",), "DURABLE_LEASE_TTL",
         "Lease duration in seconds; heartbeats renew it every third of it, and a dead dispatcher's "
         "runs are taken over after it expires. Default: 30.", metavar="SECONDS"),
    _Opt("poll_interval_s", ("--poll-interval",), "DURABLE_POLL_INTERVAL",
         "Fallback poll for due runs, in seconds (notifications wake claims sooner); an idle "
         "dispatcher issues about one query per interval. Default: 2.", metavar="SECONDS"),
    _Opt("shutdown_grace_s", ("--grace",), "DURABLE_SHUTDOWN_GRACE",
         "On SIGTERM/SIGINT, seconds in-flight runs get to reach their next durable point before "
         "their leases are released. Default: 10.", metavar="SECONDS"),
    _Opt("pool_size", ("--pool-size",), "DURABLE_POOL_SIZE",
         "Max pooled database connections (plus one for LISTEN). Default: 10.", metavar="N"),
    _Opt("connect_timeout_s", ("--connect-timeout",), "DURABLE_CONNECT_TIMEOUT",
         "Seconds one connection attempt may take. Default: 10.", metavar="SECONDS"),
    _Opt("metrics_host", ("--metrics-host",), "DURABLE_METRICS_HOST",
         "Address serving /metrics, /healthz and /readyz. Default: 127.0.0.1.", metavar="HOST"),
    _Opt("metrics_port", ("--metrics-port",), "DURABLE_METRICS_PORT",
         f"Port for /metrics, /healthz and /readyz (0 = a free port). Default: {DEFAULT_METRICS_PORT}.",
         metavar="PORT"),
    _Opt("log_level", ("--log-level",), "DURABLE_LOG_LEVEL",
         "debug, info, warning or error. Default: info.", metavar="LEVEL"),
    _Opt("log_format", ("--log-format",), "DURABLE_LOG_FORMAT",
         "plain (human) or json (one object per line: ts, level, logger, message, exc). Default: plain.",
         metavar="FORMAT"),
    _Opt("retention_s", ("--retention",), "DURABLE_RETENTION",
         "Delete finished runs (and their history) older than this, e.g. 30d or 12h, in bounded "
         "batches every few minutes; never a run under an unfinished ancestor. Default: keep all.",
         metavar="DURATION"),
    _Opt("no_wait", ("--no-wait",), "DURABLE_NO_WAIT",
         "Exit with an error when the database is unreachable at start, instead of retrying with "
         "backoff.", "flag"),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="durable-dispatcher",
        description="Claim and execute durable workflow runs from PostgreSQL. Run as many as you like, "
                    "on many hosts, against one database. Every flag can also be set by the environment "
                    "variable shown; flags win.",
        epilog="SIGTERM/SIGINT stop gracefully (see --grace); a second signal exits at once with status 1. "
               "Exit status: 0 after a clean shutdown, 1 on a runtime failure (a module that fails to "
               "import, database unreachable with --no-wait), 2 on bad settings (a bad flag value, no "
               "workflows registered, metrics port in use). Example: durable-dispatcher -m myapp.workflows "
               "--dsn postgresql://app@db/app -q default -c 200",
    )
    for o in OPTIONS:
        help_text = f"{o.help} [env {o.env}]"
        if o.kind == "flag":
            p.add_argument(*o.flags, dest=o.field, action="store_true", default=None, help=help_text)
        elif o.kind == "list":
            p.add_argument(*o.flags, dest=o.field, action="append", default=None, metavar=o.metavar,
                           help=help_text)
        else:
            p.add_argument(*o.flags, dest=o.field, default=None, metavar=o.metavar, help=help_text)
    return p


def _label(field: str) -> str:
    o = next((o for o in OPTIONS if o.field == field), None)
    return f"{o.flags[-1]} / {o.env}" if o else field


def load_settings(argv: Sequence[str] | None = None,
                  environ: dict[str, str] | None = None) -> DispatcherSettings:
    """Parse flags (argparse exits 2 on an unknown flag) and validate everything;
    raises ConfigurationError naming the flag, its environment variable and the problem."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for o in OPTIONS:
        given = args.get(o.field)
        if given is not None:
            values[o.field] = given
            continue
        raw = env.get(o.env)
        if raw is None or (raw == "" and o.kind != "flag"):
            continue
        if o.kind == "flag":
            low = raw.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ConfigurationError(f"invalid setting {_label(o.field)}: expected true/false, got {raw!r}")
            values[o.field] = low in _TRUE
        else:
            values[o.field] = raw
    if "modules" not in values:
        raise ConfigurationError(
            "no workflow modules given: pass --module myapp.workflows (or set DURABLE_MODULES) so the "
            "dispatcher imports the code that registers your workflows")
    try:
        settings = DispatcherSettings(**values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "settings"
            got = values.get(field)
            problems.append(f"{_label(field)}: {e['msg']} (got {got!r})")
        raise ConfigurationError("invalid setting " + "; ".join(problems)) from None
    settings.engine_settings()
    return settings
