"""Dispatcher settings: every :class:`~durable.EngineSettings` field plus the dispatcher's
own, each settable by a flag and by a ``DURABLE_*`` environment variable (flags win, then
the environment, then the defaults), validated by one pydantic-settings model.

Nothing is declared twice: the engine's fields (bounds, defaults, descriptions) come from
:class:`~durable.EngineSettings`, and the flags, the environment variable names and
``--help`` are generated from the model's fields (:data:`OPTIONS`). A field's setting name
is its name, less the ``_s`` of a duration (``lease_ttl_s``: ``--lease-ttl`` and
``DURABLE_LEASE_TTL``); every duration accepts ``30s``, ``10m``, ``1h30m``, ``7d`` or plain
seconds. The few names that differ from that rule are in ``_NAMES`` and ``_FLAGS``."""

from __future__ import annotations

import argparse
import os
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Mapping, Sequence, get_args, get_origin

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from durable.config import DURATION, EngineSettings, Seconds
from durable.errors import ConfigurationError
from durable.store.connections import validate_dsn
from durable.ui.bind import check_token, parse_bind

__all__ = ["DEFAULT_METRICS_PORT", "OPTIONS", "DispatcherSettings", "EnvironmentSource", "Option",
           "build_parser", "load_settings"]

DEFAULT_METRICS_PORT = 9464

# Where the rule (setting name = field name less a duration's _s; flag --setting-name;
# environment variable DURABLE_SETTING_NAME) is not what people type: the setting name,
# and the flags (the long one last).
_NAMES = {"schema_name": "schema"}
_FLAGS = {"modules": ("-m", "--module"), "queues": ("-q", "--queue"), "concurrency": ("-c", "--concurrency"),
          "shutdown_grace_s": ("--grace",)}

# The environment load_settings(environ=...) reads instead of os.environ.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("durable_dispatcher_environ", default=None)


class DispatcherSettings(EngineSettings, BaseSettings):
    """Everything a dispatcher process needs: the engine's settings and the daemon's own.
    Build it with :func:`load_settings` (flags and environment) or directly in Python
    (keyword arguments, then ``DURABLE_*`` environment variables, then defaults)."""

    model_config = SettingsConfigDict(env_prefix="DURABLE_", extra="forbid", frozen=True, allow_inf_nan=False)

    # engine settings a dispatcher does not let you change (not flags, not environment variables)
    execute: Literal[True] = Field(True, description="a dispatcher always executes runs")
    metrics: Literal[True] = Field(True, description="a dispatcher always records and serves metrics")

    # the dispatcher's own
    modules: tuple[str, ...] = Field(..., min_length=1,
                                     description="Python module to import so its workflows register, e.g. "
                                                 "myapp.workflows; the current directory is importable")
    shutdown_grace_s: Seconds = Field(10.0, ge=0, le=3600,
                                      description="on SIGTERM/SIGINT, how long in-flight runs get to reach their "
                                                  "next durable point before their leases are released")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="address serving /metrics, /healthz and /readyz")
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=0, le=65535,
                              description="port serving /metrics, /healthz and /readyz (0 = a free port)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="least severe level logged")
    log_format: Literal["plain", "json"] = Field("plain", description="plain (for people) or json (one object per "
                                                                      "line: ts, level, logger, message, exc)")
    no_wait: bool = Field(False, description="exit with an error when the database is unreachable at start, "
                                             "instead of retrying with backoff")
    # the web console (issue 16): durable.ui, served next to the dispatcher
    ui: str | None = Field(None, description="serve the web console on [HOST:]PORT (HOST defaults to 127.0.0.1; "
                                             "any other address needs --ui-token); needs pip install 'durable[ui]'")
    ui_token: str | None = Field(None, validate_default=True,
                                 description="the console's access token (at least 8 characters): required for "
                                             "actions, and for every page when given")
    ui_read_only: bool = Field(False, description="the console shows everything and allows no action")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments (the flags, from load_settings), then the environment."""
        return init_settings, EnvironmentSource(settings_cls)

    # durations given as text (30s, 10m, ...): EngineSettings._duration, inherited

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

    @field_validator("ui")
    @classmethod
    def _ui_ok(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_bind(v)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("ui_token")
    @classmethod
    def _ui_token_ok(cls, v: str | None, info: ValidationInfo) -> str | None:
        ui = info.data.get("ui")
        if ui is not None:
            try:
                check_token(parse_bind(ui)[0], v, flag="--ui-token")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return v

    def ui_bind(self) -> tuple[str, int] | None:
        """Where --ui serves the console: (host, port), or None without --ui."""
        return None if self.ui is None else parse_bind(self.ui)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    def engine_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`durable.Engine` besides the DSN: every
        :class:`~durable.EngineSettings` field, already validated with the same bounds."""
        return {name: getattr(self, name) for name in EngineSettings.model_fields if name != "dsn"}


# --- flags and environment variables, generated from the fields ------------------------------


@dataclass(frozen=True)
class Option:
    """One setting as people write it: its flags (the long one last), its environment
    variable, its help text, and how argparse takes it."""

    field: str
    flags: tuple[str, ...]
    env: str
    help: str
    kind: Literal["value", "list", "flag", "switch"]  # flag: --x sets True; switch: --x / --no-x
    metavar: str | None
    engine: bool  # an EngineSettings field (else the dispatcher's own)


def _is_fixed(info: FieldInfo) -> bool:
    """A field with one possible value (``Literal[True]``) is not a setting."""
    return get_origin(info.annotation) is Literal and len(get_args(info.annotation)) == 1


def _default_text(info: FieldInfo) -> str:
    d = info.default
    if info.is_required() or d is None or isinstance(d, bool):
        return ""
    if DURATION in info.metadata:
        return f"{d:g}s"
    if isinstance(d, tuple):
        return ",".join(str(x) for x in d)
    return str(d).lower() if get_origin(info.annotation) is Literal else str(d)


def _option(name: str, info: FieldInfo, env_prefix: str) -> Option:
    setting = _NAMES.get(name) or (name.removesuffix("_s") if DURATION in info.metadata else name)
    flags = _FLAGS.get(name, ("--" + setting.replace("_", "-"),))
    long_name = flags[-1].lstrip("-").replace("-", "_").upper()
    annotation = info.annotation
    kind: Literal["value", "list", "flag", "switch"] = "value"
    metavar: str | None = long_name
    if annotation is bool:
        kind, metavar = ("switch" if info.default else "flag"), None
    elif get_origin(annotation) is tuple:
        kind = "list"
    elif get_origin(annotation) is Literal:
        metavar = "{" + ",".join(str(a).lower() for a in get_args(annotation)) + "}"
    elif DURATION in info.metadata:
        metavar = "DURATION"
    elif annotation is int:
        metavar = "N"
    text = info.description or setting.replace("_", " ")
    parts = [text[0].upper() + text[1:] + "."]
    if kind == "list":
        parts.append("Repeat the flag or comma-separate.")
    if info.is_required():
        parts.append("Required.")
    elif default := _default_text(info):
        parts.append(f"Default: {default}.")
    env = env_prefix + setting.upper()
    parts.append(f"[env {env}]")
    return Option(field=name, flags=flags, env=env, help=" ".join(parts), kind=kind, metavar=metavar,
                  engine=name in EngineSettings.model_fields)


@cache
def options_of(settings_cls: type[BaseSettings]) -> tuple[Option, ...]:
    """The settable fields of a settings class as flags and environment variables."""
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    return tuple(_option(name, info, prefix) for name, info in settings_cls.model_fields.items()
                 if not _is_fixed(info))


OPTIONS: tuple[Option, ...] = options_of(DispatcherSettings)


class EnvironmentSource(PydanticBaseSettingsSource):
    """``DURABLE_*`` environment variables by the names :data:`OPTIONS` gives them. Values
    stay text for the model's validators (durations, comma-separated lists, booleans such
    as true/false/1/0/yes/no); an empty variable counts as unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        given = environ if environ is not None else _ENVIRON.get()
        self.environ: Mapping[str, str] = os.environ if given is None else given
        self.options = {o.field: o for o in options_of(settings_cls)}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        o = self.options.get(field_name)
        if o is None:
            return None, field_name, False
        raw = self.environ.get(o.env)
        return (raw if raw is not None and raw.strip() else None), o.env, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(info, name)
            if value is not None:
                values[name] = value
        return values


# --- the command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``durable-dispatcher`` command line: one flag per :data:`OPTIONS` entry. Every
    value is left as text (absent = None) for :class:`DispatcherSettings` to validate."""
    p = argparse.ArgumentParser(
        prog="durable-dispatcher",
        description="Claim and execute durable workflow runs from PostgreSQL. Run as many as you like, "
                    "on many hosts, against one database. Every flag can also be set by the environment "
                    "variable shown; flags win. A DURATION is 30s, 10m, 1h30m, 7d or plain seconds.",
        epilog="SIGTERM/SIGINT stop gracefully (see --grace); a second signal exits at once with status 1. "
               "Exit status: 0 after a clean shutdown, 1 on a runtime failure (a module that fails to "
               "import, database unreachable with --no-wait), 2 on bad settings (a bad flag value, no "
               "workflows registered, metrics port in use). Example: durable-dispatcher -m myapp.workflows "
               "--dsn postgresql://app@db/app -q default -c 200",
    )
    groups = {False: p.add_argument_group("dispatcher"),
              True: p.add_argument_group("engine (durable.EngineSettings)")}
    for o in sorted(OPTIONS, key=lambda o: o.engine):  # the dispatcher's own first
        g = groups[o.engine]
        help_text = o.help.replace("%", "%%")
        if o.kind == "flag":
            g.add_argument(*o.flags, dest=o.field, action="store_true", default=None, help=help_text)
        elif o.kind == "switch":
            g.add_argument(*o.flags, dest=o.field, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        elif o.kind == "list":
            g.add_argument(*o.flags, dest=o.field, action="append", default=None, metavar=o.metavar,
                           help=help_text)
        else:
            g.add_argument(*o.flags, dest=o.field, default=None, metavar=o.metavar, help=help_text)
    return p


def _label(field: str) -> str:
    o = next((o for o in OPTIONS if o.field == field), None)
    return f"{o.flags[-1]} / {o.env}" if o else field


def _problems(exc: ValidationError, given: Mapping[str, Any]) -> str:
    """One line naming each bad setting's flag and environment variable, the problem, and
    the value as given (``given``: the text of the flags and variables)."""
    problems = []
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else "settings"
        o = next((o for o in OPTIONS if o.field == field), None)
        if e["type"] == "missing" and o is not None:
            info = DispatcherSettings.model_fields[field]
            problems.append(f"missing setting {o.flags[-1]} (or {o.env}): {info.description}")
            continue
        msg = str(e["ctx"]["error"]) if e["type"] == "value_error" and "ctx" in e else e["msg"]
        got = given.get(field, e.get("input"))
        problems.append(f"invalid setting {_label(field)}: {msg}"
                        + ("" if repr(got) in msg else f" (got {got!r})"))
    return "; ".join(problems)


def load_settings(argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> DispatcherSettings:
    """Parse flags (argparse exits 2 on an unknown flag) over ``environ`` (default
    ``os.environ``) and validate everything; raises ConfigurationError naming each bad
    setting's flag, its environment variable and the problem."""
    args = vars(build_parser().parse_args(argv))
    flags = {name: value for name, value in args.items() if value is not None}
    token = _ENVIRON.set(environ)
    try:
        return DispatcherSettings(**flags)
    except ValidationError as exc:
        given = {**EnvironmentSource(DispatcherSettings)(), **flags}
        raise ConfigurationError(_problems(exc, given)) from None
    finally:
        _ENVIRON.reset(token)
