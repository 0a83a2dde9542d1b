"""Engine settings: one validated object, built from keyword arguments and DURABLE_* env.

:class:`EngineSettings` is the one place each engine knob is declared: its name, type,
bounds, default and description. The dispatcher derives its settings (flags, environment
variables, ``--help``) from these fields instead of declaring them again."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .durations import parse_duration
from .errors import ConfigurationError

__all__ = ["DURATION", "EngineSettings", "Seconds"]

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class _Duration:
    """Marks a setting in seconds. In Python it is a number; where settings are text (the
    dispatcher's flags and environment variables) it is written as a duration: ``30s``,
    ``10m``, ``1h30m``, ``7d`` or plain seconds (:func:`durable.durations.parse_duration`),
    and named without its ``_s`` (``lease_ttl_s``: ``--lease-ttl``, ``DURABLE_LEASE_TTL``)."""

    def __repr__(self) -> str:
        return "DURATION"


DURATION: Final = _Duration()
Seconds = Annotated[float, DURATION]


class EngineSettings(BaseModel):
    """Every knob of an :class:`~durable.Engine` (and of the dispatcher, which embeds one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str | None = Field(None, description="PostgreSQL DSN, e.g. postgresql://user:pass@host:5432/db; "
                                              "unset: DURABLE_DSN, else an embedded PostgreSQL "
                                              "(pip install 'durable[embedded]')")
    schema_name: str = Field("durable", description="schema holding durable's tables")
    data_dir: str | None = Field(None, description="data folder of the embedded PostgreSQL (used when there is "
                                                   "no DSN); unset: a folder under your user data directory")
    execute: bool = Field(True, description="execute runs in this process (False = client only)")
    queues: tuple[str, ...] = Field(("default",), description="queues this process executes")
    concurrency: int = Field(100, ge=1, le=100_000, description="max runs executing at once in this process")
    lease_ttl_s: Seconds = Field(30.0, gt=0.5, le=3600,
                                 description="lease duration: heartbeats renew it every third of it, and the "
                                             "runs of a process that died are taken over once it expires")
    poll_interval_s: Seconds = Field(2.0, gt=0.0, le=300,
                                     description="fallback poll for due runs (notifications wake claims "
                                                 "sooner); an idle process issues about one query per interval")
    sticky_grace_s: Seconds = Field(2.0, ge=0.0, le=300,
                                    description="how long a woken run waits for the process that parked it")
    claim_batch: int = Field(50, ge=1, le=10_000, description="max runs claimed per query")
    max_parked: int = Field(10_000, ge=0, description="suspended runs kept hot in memory (LRU); a run pushed "
                                                       "out is replayed from its journal when it resumes")
    max_parked_bytes: int = Field(256 * 1024 * 1024, ge=0,
                                  description="memory the suspended runs kept hot may hold, estimated from their "
                                              "journals (LRU, as max_parked)")
    payload_limit_bytes: int = Field(1024 * 1024, ge=64, description="max size of one JSON payload, in bytes")
    history_limit: int = Field(100_000, ge=10, description="max events in one run's history (a child costs two: "
                                                           "one run fans out to about 50,000 children)")
    max_child_depth: int = Field(10, ge=1, le=1000, description="max depth of a run tree")
    connect_timeout_s: Seconds = Field(10.0, gt=0, le=600, description="bound on connecting to the database")
    listener_keepalive_s: Seconds = Field(15.0, ge=0.1, le=3600,
                                          description="the LISTEN connection is pinged when silent this long and "
                                                      "re-established when a ping does not answer within it "
                                                      "(a half-open connection)")
    pool_size: int = Field(10, ge=1, le=1000, description="max pooled database connections (plus one for LISTEN)")
    migrate: bool = Field(True, description="apply schema migrations on start (off: only check the schema)")
    schedules: bool = Field(True, description="fire due schedules in this process when it executes runs "
                                              "(engine.schedules; off: only other processes fire them)")
    retention_s: Annotated[float | None, DURATION] = Field(
        None, gt=0, le=100 * 365 * 86400,
        description="delete finished runs (and their history) older than this, in bounded batches in the "
                    "background, never a run under an unfinished ancestor; unset: keep them (see durable gc)")
    retention_interval_s: Seconds = Field(300.0, gt=0, le=86400,
                                          description="how often the background retention runs")
    metrics: bool = Field(True, description="record Prometheus metrics (durable.metrics) from this "
                                            "process's hook events; serve them with "
                                            "engine.start_metrics_server()")
    otel_tracing: bool = Field(False, description="record OpenTelemetry spans (a span per run execution, step "
                                                  "and child start) with the application's tracer provider; "
                                                  "needs pip install 'durable[otel]'")

    @field_validator("*", mode="before")
    @classmethod
    def _duration(cls, v: Any, info: ValidationInfo) -> Any:
        """A duration setting also takes text: 30s, 10m, 1h30m, 7d or plain seconds, as
        every duration flag and environment variable does (durable.durations)."""
        if isinstance(v, str) and info.field_name and DURATION in cls.model_fields[info.field_name].metadata:
            try:
                return parse_duration(v, "the value")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("schema_name")
    @classmethod
    def _schema_ok(cls, v: str) -> str:
        if not _SCHEMA_RE.match(v):
            raise ValueError(
                "schema name must be lowercase letters, digits and underscores, starting with a "
                f"letter or underscore, at most 41 characters (got {v!r})"
            )
        return v

    @field_validator("queues")
    @classmethod
    def _queues_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one queue is needed, e.g. queues=('default',)")
        for q in v:
            if not q or len(q) > 100:
                raise ValueError(f"queue names are 1-100 characters (got {q!r})")
        return tuple(dict.fromkeys(v))

    @classmethod
    def build(cls, **kwargs: Any) -> "EngineSettings":
        """Validate keyword settings (None values fall back to DURABLE_* env, then defaults)."""
        env = {
            "dsn": os.environ.get("DURABLE_DSN"),
            "schema_name": os.environ.get("DURABLE_SCHEMA"),
            "data_dir": os.environ.get("DURABLE_DATA_DIR"),
            "otel_tracing": os.environ.get("DURABLE_OTEL_TRACING"),
        }
        values: dict[str, Any] = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in kwargs.items() if v is not None})
        if "schema" in values:
            values["schema_name"] = values.pop("schema")
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(f"invalid engine settings: {problems}") from None
