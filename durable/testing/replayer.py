"""``Replayer``: replay stored run histories against the code registered now, the way
Temporal users prove a deploy safe in CI.

    replayer = Replayer(workflows=[charge])           # or Replayer(): every registered workflow
    history = await Replayer.history_from_db(engine, run_id)   # or RunHistory.from_file("run.json")
    result = await replayer.replay(history, raise_on_divergence=False)
    assert result.ok, result.divergence

A replay runs the workflow offline (durable/runtime/replay.py): no database, nothing
written, no step executed; what the history answers replays as it would after a crash, and
the first place where the code no longer matches the history is reported (its position, what
the history has there, what the code does now).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..config import EngineSettings
from ..engine import Engine
from ..errors import ConfigurationError, NonDeterminismError, ReplayError
from ..runtime import history as run_history
from ..runtime.history import RunHistory
from ..runtime.registry import WorkflowDef, all_versions
from ..runtime.replay import OfflineRun
from ..store import connections as db
from ..store.connections import Conn, run_typed, typed_error

HistorySource = RunHistory | str | Path | dict[str, Any]


@dataclass(frozen=True)
class Divergence:
    """The first place where the code no longer matches a run's history."""

    position: int | str  # the operation's key: an int on the workflow's main branch, "0.1:2" in a branch
    expected: str        # what the history has there (e.g. "step_completed 'charge'")
    got: str             # what the code does now (e.g. "step 'charge_v2'")
    message: str         # the NonDeterminismError's text, with the fix


@dataclass(frozen=True)
class ReplayResult:
    """One history replayed. ``ok`` when the code replays it without a divergence."""

    run_id: uuid.UUID
    workflow: str
    version: int
    events: int                 # events in the history
    outcome: str                # how the replay ended: completed, failed, continued, or waiting (history ends)
    divergence: Divergence | None = None
    error: NonDeterminismError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def raise_for_divergence(self) -> None:
        """Raise the divergence's :class:`~durable.NonDeterminismError`, if there is one."""
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class ReplayReport:
    """Many histories replayed (``replay_many``)."""

    results: list[ReplayResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[ReplayResult]:
        return [r for r in self.results if not r.ok]

    def raise_for_divergence(self) -> None:
        """Raise the first divergence's NonDeterminismError, if any history diverged."""
        for r in self.results:
            r.raise_for_divergence()


class Replayer:
    """Replays run histories against ``workflows`` (default: every workflow version
    registered in this process when the Replayer is made)."""

    def __init__(self, workflows: Iterable[WorkflowDef[Any, Any]] | None = None, *, timeout: float = 30.0) -> None:
        defs = list(all_versions() if workflows is None else workflows)
        for wf in defs:
            if not isinstance(wf, WorkflowDef):
                raise ConfigurationError(
                    f"Replayer(workflows=...) takes functions decorated with @durable.workflow(...), got {wf!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ConfigurationError(f"Replayer timeout must be > 0 and at most 3600 seconds, got {timeout!r}")
        self.workflows: dict[tuple[str, int], WorkflowDef[Any, Any]] = {(wf.name, wf.version): wf for wf in defs}
        self.timeout = float(timeout)
        self.settings = EngineSettings.build()

    # --- histories --------------------------------------------------------------------------

    @staticmethod
    async def history_from_db(source: Engine | str, run_id: uuid.UUID | str, *,
                              schema: str | None = None) -> RunHistory:
        """The history of ``run_id`` as stored now, read through an open Engine or from a DSN
        (``schema``: the engine's schema, default ``durable``)."""
        rid = _run_id(run_id)
        return (await Replayer.histories_from_db(source, [rid], schema=schema))[0]

    @staticmethod
    async def histories_from_db(source: Engine | str, run_ids: Iterable[uuid.UUID | str], *,
                                schema: str | None = None) -> list[RunHistory]:
        """The histories of ``run_ids`` (one connection for all)."""
        ids = [_run_id(r) for r in run_ids]

        async def read(conn: Conn) -> list[RunHistory]:
            return [await run_history.load(conn, rid) for rid in ids]

        what = f"reading the history of {len(ids)} run(s)"
        if isinstance(source, Engine):
            if schema is not None and schema != source.settings.schema_name:
                raise ConfigurationError("schema= goes with a DSN; an Engine reads its own schema")
            return await run_typed(source._require_open(), read, what=what)
        if not isinstance(source, str):
            raise ConfigurationError(f"history_from_db reads through an open Engine or a DSN string, got {source!r}")
        s = EngineSettings.build(dsn=source, schema_name=schema)
        conn = await db.connect(source, schema=s.schema_name, timeout=s.connect_timeout_s)
        try:
            return await read(conn)
        except psycopg.Error as exc:
            raise typed_error(exc, what) from exc
        finally:
            await conn.close()

    @staticmethod
    def history_from_file(path: str | Path) -> RunHistory:
        """A history exported with ``durable export RUN > run.json``."""
        return RunHistory.from_file(path)

    # --- replays ----------------------------------------------------------------------------

    async def replay(self, history: HistorySource, *, raise_on_divergence: bool = True) -> ReplayResult:
        """Replay one history (a RunHistory, an exported file's path, or its parsed JSON).
        Returns the result; with ``raise_on_divergence`` (the default) a divergence raises
        its :class:`~durable.NonDeterminismError` instead. A history of a workflow (or
        version) this Replayer does not have raises :class:`~durable.ReplayError`."""
        h = _as_history(history)
        wf = self.workflows.get((h.workflow, h.version))
        if wf is None:
            versions = sorted(v for (n, v) in self.workflows if n == h.workflow)
            if versions:
                has = f"it has version(s) {', '.join(map(str, versions))} of it"
            else:
                has = "registered here: " + (", ".join(sorted({n for n, _ in self.workflows})) or "none")
            raise ReplayError(
                f"run {h.run_id} is a run of workflow {h.workflow!r} version {h.version}, which this Replayer does "
                f"not have ({has}). Pass that definition: Replayer(workflows=[...]) with the function decorated "
                f"@durable.workflow({h.workflow!r}, version={h.version}), or replay histories of the workflows "
                "you pass.")
        end = await OfflineRun(h, wf, self.settings).run(self.timeout)
        nd = end.nondeterminism
        divergence = None if nd is None else Divergence(nd.position, nd.expected, nd.found, str(nd))
        result = ReplayResult(run_id=h.run_id, workflow=h.workflow, version=h.version, events=len(h.events),
                              outcome=end.outcome, divergence=divergence, error=nd)
        if raise_on_divergence:
            result.raise_for_divergence()
        return result

    async def replay_many(self, histories: Iterable[HistorySource]) -> ReplayReport:
        """Replay every history (never raising for a divergence: the report lists them)."""
        return ReplayReport([await self.replay(h, raise_on_divergence=False) for h in histories])


def _run_id(value: uuid.UUID | str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ConfigurationError(f"{value!r} is not a run id (a UUID)") from None


def _as_history(value: HistorySource) -> RunHistory:
    if isinstance(value, RunHistory):
        return value
    if isinstance(value, (str, Path)):
        return RunHistory.from_file(value)
    if isinstance(value, dict):
        return RunHistory.from_doc(value)
    raise ReplayError(f"replay() takes a RunHistory, an exported history file's path or its parsed JSON, got "
                      f"{type(value).__name__}")
