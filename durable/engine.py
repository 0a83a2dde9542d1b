"""The Engine: what a service embeds (start runs, wait for results, cancel, signal) and,
with ``execute=True`` (the default), what executes runs in-process. The dispatcher
daemon is an Engine with a CLI, health endpoints and signal handling around it.

The Engine composes the layers below it and holds no run state of its own: the run table
(durable/runtime/runs.py) executes runs, the result waits (durable/runtime/results.py)
serve ``handle.result()``, and each background concern is a small loop of
durable/worker/ handed only what it needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, overload

from pydantic_core import to_jsonable_python

from .attributes import check_attributes, filter_docs
from .config import EngineSettings
from .errors import ConfigurationError, PayloadError, RunConflictError, RunNotFoundError
from .handle import RunHandle
from .observe import hooks, metrics, tracing
from .observe.exposition import MetricsServer, QueueCollector
from .runtime import branches, cancel, catalog, redrive, signals
from .runtime.notifications import Notifications
from .runtime.registry import WorkflowDef, all_workflows, resolve
from .runtime.results import ResultWaits
from .runtime.schedules import Schedules
from .runtime.runs import RunTable
from .serde import roundtrip, validate
from .store import connections as db
from .store import migrate
from .store import registry as store_registry
from .store import runs as store_runs
from .store import search as store_search
from .store.connections import Conn, Pool, run_typed
from .store.rows import (Claim, ExistingRun, RegisteredWorkflow, RunFilter, RunInfo, RunPage, Started, WorkerInfo,
                         tree_key_of)
from .worker import Claimer, Heartbeat, Listener, Retention, Scheduler, Timeouts

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")
T = TypeVar("T")


class Engine:
    """``async with Engine(dsn) as engine:`` — see :class:`~durable.config.EngineSettings`
    for every keyword (``schema``, ``execute``, ``queues``, ``concurrency``, ...)."""

    def __init__(self, dsn: str | None = None, **settings: Any) -> None:
        self.settings = EngineSettings.build(dsn=dsn, **settings)
        self.dsn = ""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channel = f"durable_wake_{self.settings.schema_name}"
        self.pool: Pool | None = None
        self.closing = False
        self.opened = False
        s = self.settings
        self.results = ResultWaits()
        self.runs = RunTable(s, self.owner, self.results, kick_claimer=self._kick_claimer,
                             note_deadline=self._note_deadline)
        self.claimer = Claimer(self.runs) if s.execute else None
        self.heartbeat = Heartbeat(self.runs) if s.execute else None
        self.timeouts = Timeouts(self.runs) if s.execute else None  # execution timeouts
        self.retention = Retention(s, lambda: self.pool) if s.retention_s is not None else None
        # --- schedules (issue 15): engine.schedules, fired by executing engines' scheduler loop
        self.schedules = Schedules(s, self._require_open)
        self.scheduler = Scheduler(s, self.schedules) if s.execute and s.schedules else None
        self.listener = Listener(s, self.channel,
                                 Notifications(self.runs, self.results, kick_claimer=self._kick_claimer,
                                               kick_scheduler=self.scheduler.kick if self.scheduler else None))
        self._metrics_servers: list[MetricsServer] = []   # servers started by start_metrics_server()
        self._queue_collector: QueueCollector | None = None
        self._recent_definitions = catalog.Recent()  # workflows started by name (issue 14)
        self._served_checked: dict[tuple[str, str, int], float] = {}  # (queue, workflow, version) -> when
        # --- observability (issue 14): OpenTelemetry needs its extra; refused here, before anything is opened
        if s.otel_tracing and not tracing.AVAILABLE:
            raise ConfigurationError(
                "otel_tracing=True (or DURABLE_OTEL_TRACING) needs opentelemetry-api: pip install "
                "'durable[otel]', or turn tracing off")

    def _kick_claimer(self) -> None:
        if self.claimer is not None:
            self.claimer.kick()

    def _note_deadline(self, seconds: float) -> None:
        if self.timeouts is not None:
            self.timeouts.note(seconds)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> "Engine":
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self) -> "Engine":
        """Connect (starting embedded PostgreSQL when no DSN is configured), migrate, and
        start the background loops."""
        if self.opened:
            return self
        s = self.settings
        self.dsn = await db.resolve_dsn(s.dsn, data_dir=s.data_dir)
        conn = await db.connect(self.dsn, schema=s.schema_name, timeout=s.connect_timeout_s)
        try:
            if s.migrate:
                await migrate.migrate(conn, s.schema_name)
            else:
                await migrate.check_schema(conn, s.schema_name)
            self.runs.distributed = await migrate.is_citus(conn)
        finally:
            await conn.close()
        self.pool = await db.open_pool(self.dsn, schema=s.schema_name, min_size=min(2, s.pool_size),
                                       max_size=s.pool_size, timeout=s.connect_timeout_s)
        self.closing = False
        self.runs.open(self.pool)
        if s.execute:  # this process's lease row exists before it holds any lease
            await self.runs.renew_leases()
            await self._publish_workflows(self.pool)
        if s.metrics:
            metrics.install()  # process-wide and idempotent; close() leaves it attached
            # every registered workflow's series at 0, so dashboards list them all from the start
            metrics.declare_workflows((wf.name, wf.queue) for wf in all_workflows().values())
        if s.otel_tracing:
            tracing.install()  # process-wide and idempotent, like the metrics
        branches.install(asyncio.get_running_loop())  # concurrent branches in workflows
        self.listener.dsn = self.dsn
        self.listener.start()
        for loop in (self.claimer, self.heartbeat, self.retention, self.timeouts):
            if loop is not None:
                loop.start()
        self.opened = True
        if self.scheduler is not None:  # schedules: declared ones upserted, then fired here
            try:
                await self.schedules.declare()
            except BaseException:  # e.g. a declared schedule's id taken by another workflow's
                await self.close(grace=0)
                raise
            self.scheduler.start()
        try:
            await asyncio.wait_for(self.listener.connected.wait(), s.connect_timeout_s)
        except asyncio.TimeoutError:
            log.warning("listener not connected yet; wakes fall back to polling until it is")
        return self

    async def close(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight runs reach their next durable point for up to
        ``grace`` seconds, release the leases of those that did not, and disconnect."""
        if not self.opened:
            return
        self.closing = True
        self.runs.begin_close()  # executions stop at their next durable point from now, not after the loops stop
        for loop in (self.claimer, self.retention, self.timeouts, self.scheduler):
            if loop is not None:
                await loop.stop()
        await self.runs.close(grace)
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        await self.listener.stop()
        self.results.release_all()
        if self.pool is not None:
            self.runs.detach()
            await self.pool.close()
            self.pool = None
        if self._metrics_servers or self._queue_collector is not None:
            await asyncio.to_thread(self._stop_metrics_servers)  # shutdown() blocks up to 0.5 s
        self.opened = False

    # --- telemetry -------------------------------------------------------------------------

    def start_metrics_server(self, host: str = "127.0.0.1", port: int = 9464, *,
                             queue_metrics: bool = True,
                             extra_routes: dict[str, Any] | None = None) -> MetricsServer:
        """Serve ``durable.metrics.SERVED_REGISTRY`` (durable's metrics, the process collectors
        and ``durable_build_info``) on ``http://host:port/metrics`` from a daemon
        thread and return the :class:`~durable.observe.exposition.MetricsServer` (``.port``,
        ``.url``, ``.stop()``); ``port=0`` picks a free port. With ``queue_metrics`` the
        registry also reports queue depth / oldest ready age / waiting runs of this engine's
        schema, read from the database at scrape time. ``close()`` stops what this method
        started.

        Services with their own HTTP server mount the same registry instead, e.g.
        ``make_asgi_app(registry=durable.metrics.SERVED_REGISTRY)``.
        """
        self._require_open()
        if queue_metrics and self._queue_collector is None:
            try:
                self._queue_collector = metrics.register_queue_collector(self.dsn, self.settings.schema_name)
            except ValueError:  # prometheus_client: those names are registered already
                raise ConfigurationError(
                    "queue metrics are already registered in this process (another engine's "
                    "start_metrics_server or register_queue_collector); pass queue_metrics=False") from None
        try:
            server = metrics.start_metrics_server(host, port, extra_routes=extra_routes)
        except BaseException:
            if not self._metrics_servers:
                self._drop_queue_collector()
            raise
        self._metrics_servers.append(server)
        return server

    def _stop_metrics_servers(self) -> None:
        for server in self._metrics_servers:
            server.stop()
        self._metrics_servers.clear()
        self._drop_queue_collector()

    def _drop_queue_collector(self) -> None:
        if self._queue_collector is not None:
            metrics.unregister_queue_collector(self._queue_collector)
            self._queue_collector = None

    @property
    def ready(self) -> bool:
        """Database reachable and listener up (for readiness probes)."""
        return self.opened and not self.closing and self.listener.up

    def _require_open(self) -> Pool:
        if not self.opened or self.pool is None:
            raise ConfigurationError("the engine is not open: use `async with Engine(...) as engine:` "
                                     "or `await engine.open()` first")
        return self.pool

    # --- starting runs -------------------------------------------------------------------

    @overload
    async def start(self, workflow: WorkflowDef[I, R], input: Any = None, *, id: uuid.UUID | str | None = None,
                    key: str | None = None, queue: str | None = None, timeout: float | None = None,
                    start_at: Any = None, attributes: dict[str, Any] | None = None,
                    result_type: None = None) -> RunHandle[R]: ...

    @overload
    async def start(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *,
                    id: uuid.UUID | str | None = None, key: str | None = None, queue: str | None = None,
                    timeout: float | None = None, start_at: Any = None, attributes: dict[str, Any] | None = None,
                    result_type: type[T]) -> RunHandle[T]: ...

    @overload
    async def start(self, workflow: str, input: Any = None, *, id: uuid.UUID | str | None = None,
                    key: str | None = None, queue: str | None = None, timeout: float | None = None,
                    start_at: Any = None, attributes: dict[str, Any] | None = None,
                    result_type: None = None) -> RunHandle[Any]: ...

    async def start(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *,
                    id: uuid.UUID | str | None = None, key: str | None = None, queue: str | None = None,
                    timeout: float | None = None, start_at: Any = None, attributes: dict[str, Any] | None = None,
                    result_type: Any = None) -> RunHandle[Any]:
        """Start a run and return its handle. With ``id=`` or ``key=`` (an idempotency
        key), starting twice with the same input returns the same run (another input:
        RunConflictError). A name not registered in this process is looked up in the
        database's workflow registry (what the workers registered): the input is checked
        against the registered JSON schema and the run goes to the registered queue and
        version. ``attributes``: search attributes (scalars or lists of scalars) that
        ``list_runs(attributes=...)`` filters on. ``result_type=`` (e.g. a pydantic model)
        converts the handle's result."""
        return (await self._start(workflow, input, id=id, key=key, queue=queue, timeout=timeout,
                                  start_at=start_at, attributes=attributes, result_type=result_type)).handle

    async def _start(self, workflow: WorkflowDef[Any, Any] | str, input: Any, *, id: uuid.UUID | str | None = None,
                     key: str | None = None, queue: str | None = None, timeout: float | None = None,
                     start_at: Any = None, attributes: dict[str, Any] | None = None,
                     result_type: Any = None) -> _Started:
        pool = self._require_open()
        attrs = check_attributes(attributes, "engine.start") if attributes is not None else None
        wf, registered = await self._definition_for_start(pool, workflow)
        if not wf.takes_input and input is not None:
            raise PayloadError(f"workflow {wf.name!r} takes no input (its signature is (ctx)), but one was given")
        text, _ = roundtrip(input, wf.input_type, what=f"input of workflow {wf.name!r}",
                            limit=self.settings.payload_limit_bytes)
        if registered is not None:
            catalog.check_input(registered, json.loads(text))
        if key is not None and (not isinstance(key, str) or not key or len(key) > 500):
            raise ConfigurationError(f"key= must be a non-empty string of at most 500 characters, got {key!r}")
        if id is None:
            run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"durable:{wf.name}:{key}") if key else uuid.uuid4()
        else:
            try:
                run_id = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))
            except ValueError:
                raise ConfigurationError(f"id= must be a UUID, got {id!r}") from None
        q = queue or wf.queue
        tmo = timeout if timeout is not None else wf.execution_timeout
        if tmo is not None and (isinstance(tmo, bool) or not isinstance(tmo, (int, float)) or not 0 < tmo <= 3.2e8):
            raise ConfigurationError(f"timeout must be > 0 seconds and at most 10 years, got {tmo!r}")
        local = (self.settings.execute and not self.closing and registered is None and q in self.settings.queues
                 and start_at is None and self.runs.capacity() > 0)

        async def insert(conn: Conn) -> tuple[Started | None, ExistingRun | None]:
            if attrs:  # search attributes: known keys first, then the run and its attributes in one transaction
                await store_search.add_keys(conn, attrs)
                async with conn.transaction():
                    started = await store_runs.start_run(
                        conn, id=run_id, workflow=wf.name, version=wf.version, queue=q, leased=local, input=text,
                        key=key, timeout=tmo, owner=self.owner, ttl=self.settings.lease_ttl_s, start_at=start_at)
                    if started is not None:
                        await store_search.start_attributes(conn, tree_key_of(run_id), run_id, attrs)
            else:
                started = await store_runs.start_run(
                    conn, id=run_id, workflow=wf.name, version=wf.version, queue=q, leased=local, input=text,
                    key=key, timeout=tmo, owner=self.owner, ttl=self.settings.lease_ttl_s, start_at=start_at)
            if started is not None:
                return started, None
            return None, await store_runs.find_run_for_start(conn, id=run_id, key=key, workflow=wf.name)

        started, existing = await run_typed(pool, insert, what=f"start of a {wf.name!r} run")
        if started is None:
            if existing is None:  # raced with a delete (retention): try once more
                raise RunConflictError(f"run {run_id} could not be started; retry")
            if existing.workflow != wf.name:
                raise RunConflictError(
                    f"run id {existing.id} is already used by a run of workflow {existing.workflow!r}, not "
                    f"{wf.name!r}; choose another id/key")
            _same_input_or_conflict(existing, text, key, wf.input_type)
            return _Started(RunHandle(self, existing.id, wf.name, result_type), wf, q, False)
        hooks.emit("run.started", run_id=run_id, workflow=wf.name, queue=q, parent_run_id=None)
        if tmo is not None:
            self._note_deadline(tmo)
        if not local and started.due_in_s is not None and started.due_in_s > 0:  # a delayed start
            self.runs.claim_soon(tree_key_of(run_id), run_id, q, started.due_in_s)
        if local:
            assert started.lease_epoch is not None
            claim = Claim(tree_key=tree_key_of(run_id), id=run_id, root_id=run_id, chain_root_id=run_id,
                          workflow=wf.name, version=wf.version, queue=q, input=json.loads(text),
                          lease_epoch=started.lease_epoch)
            self.runs.begin(claim, wf, [], "start")
        return _Started(RunHandle(self, run_id, wf.name, result_type), wf, q, local)

    @overload
    async def run(self, workflow: WorkflowDef[I, R], input: Any = None, *, timeout: float | None = None,
                  result_type: None = None, **options: Any) -> R: ...

    @overload
    async def run(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *, timeout: float | None = None,
                  result_type: type[T], **options: Any) -> T: ...

    @overload
    async def run(self, workflow: str, input: Any = None, *, timeout: float | None = None,
                  result_type: None = None, **options: Any) -> Any: ...

    async def run(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *, timeout: float | None = None,
                  result_type: Any = None, **options: Any) -> Any:
        """Start a run and wait for its result (a WARNING is logged when no live worker
        serves the run's queue and workflow version: the run waits until one starts)."""
        started = await self._start(workflow, input, result_type=result_type, **options)
        if not started.local:
            await self._warn_if_unserved(started.wf, started.queue)
        return await started.handle.result(timeout=timeout)

    @overload
    def get_handle(self, run_id: uuid.UUID | str, *, result_type: None = None) -> RunHandle[Any]: ...

    @overload
    def get_handle(self, run_id: uuid.UUID | str, *, result_type: type[T]) -> RunHandle[T]: ...

    def get_handle(self, run_id: uuid.UUID | str, *, result_type: Any = None) -> RunHandle[Any]:
        """A handle to an existing run; ``result_type=`` converts its result (e.g. into a
        pydantic model) for a client that does not import the workflow."""
        try:
            rid = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise ConfigurationError(f"{run_id!r} is not a run id (a UUID)") from None
        return RunHandle(self, rid, None, result_type)

    # --- results and state ---------------------------------------------------------------

    async def result(self, run_id: uuid.UUID, *, timeout: float | None = None, workflow: str | None = None,
                     result_type: Any = None) -> Any:
        """Wait for a run (following continue-as-new) and return its result, or raise
        RunFailedError / RunCancelledError; RunTimeoutError after ``timeout`` seconds.
        ``result_type=`` validates/converts the result (PayloadError when it does not fit)."""
        pool = self._require_open()
        value = await self.results.result(pool, run_id, timeout=timeout, workflow=workflow, local=self.runs.has)
        if result_type is None:
            return value
        return validate(to_jsonable_python(value), result_type, what=f"result of run {run_id}")

    async def info(self, run_id: uuid.UUID) -> RunInfo:
        pool = self._require_open()

        async def read(conn: Conn) -> RunInfo | None:
            return await store_runs.info(conn, run_id)

        found = await run_typed(pool, read, what=f"reading run {run_id}")
        if found is None:
            raise RunNotFoundError(run_id)
        return found

    # --- signals and cancellation --------------------------------------------------------

    async def signal(self, run_id: uuid.UUID | str, name: str, payload: Any = None, *,
                     delivery_id: str | None = None) -> bool:
        """Send a signal; returns False when ``delivery_id`` was already delivered."""
        pool = self._require_open()
        return await signals.send(pool, self.get_handle(run_id).run_id, name, payload, delivery_id,
                                  self.settings.payload_limit_bytes)

    async def cancel(self, run_id: uuid.UUID | str, *, graceful: bool = False,
                     reason: str = "cancelled") -> cancel.CancelResult:
        """Cancel a run and its in-flight descendants; the result counts how many runs were
        cancelled (0 when it had already finished). ``graceful=True`` asks the run to cancel
        itself (it sees CancellationRequested at its next await)."""
        pool = self._require_open()
        res = await cancel.cancel(pool, self.get_handle(run_id).run_id, graceful=graceful, reason=reason,
                                  max_depth=self.settings.max_child_depth)
        if not res.already_finished and not graceful:
            self.runs.check_cancelled()
        return res

    # --- listing and searching runs (issue 14) ------------------------------------------

    async def list_runs(self, *, status: str | Iterable[str] | None = None, workflow: str | None = None,
                        queue: str | None = None, created_after: datetime | None = None,
                        created_before: datetime | None = None, finished_after: datetime | None = None,
                        finished_before: datetime | None = None, parent: uuid.UUID | str | None = None,
                        root: uuid.UUID | str | None = None, attributes: dict[str, Any] | None = None,
                        top_level: bool = False, limit: int = 50, cursor: str | None = None) -> RunPage:
        """Runs matching every filter given, newest first, ``limit`` per page; pass the
        page's ``next_cursor`` as ``cursor=`` for the next one (stable while runs are
        added). ``workflow`` is a name or a glob (``'orders.*'``); ``attributes`` holds
        when each key's value equals (or, for a list attribute, is in) the given one."""
        pool = self._require_open()
        flt = self._run_filter(status, workflow, queue, created_after, created_before, finished_after,
                               finished_before, parent, root, attributes, top_level, cursor)

        async def read(conn: Conn) -> RunPage:
            return await store_search.list_runs(conn, flt, limit)

        return await run_typed(pool, read, what="listing runs")

    async def count_runs(self, *, status: str | Iterable[str] | None = None, workflow: str | None = None,
                         queue: str | None = None, created_after: datetime | None = None,
                         created_before: datetime | None = None, finished_after: datetime | None = None,
                         finished_before: datetime | None = None, parent: uuid.UUID | str | None = None,
                         root: uuid.UUID | str | None = None, attributes: dict[str, Any] | None = None,
                         top_level: bool = False) -> int:
        """How many runs match (the filters of :meth:`list_runs`)."""
        pool = self._require_open()
        flt = self._run_filter(status, workflow, queue, created_after, created_before, finished_after,
                               finished_before, parent, root, attributes, top_level, None)

        async def read(conn: Conn) -> int:
            return await store_search.count_runs(conn, flt)

        return await run_typed(pool, read, what="counting runs")

    def _run_filter(self, status: str | Iterable[str] | None, workflow: str | None, queue: str | None,
                    created_after: datetime | None, created_before: datetime | None,
                    finished_after: datetime | None, finished_before: datetime | None,
                    parent: uuid.UUID | str | None, root: uuid.UUID | str | None,
                    attributes: dict[str, Any] | None, top_level: bool, cursor: str | None) -> RunFilter:
        for name, at in (("created_after", created_after), ("created_before", created_before),
                         ("finished_after", finished_after), ("finished_before", finished_before)):
            if at is not None and (not isinstance(at, datetime) or at.tzinfo is None):
                raise ConfigurationError(f"{name}= must be a timezone-aware datetime "
                                         f"(e.g. datetime.now(timezone.utc)), got {at!r}")
        for name, text in (("workflow", workflow), ("queue", queue)):
            if text is not None and (not isinstance(text, str) or not text):
                raise ConfigurationError(f"{name}= must be a non-empty string, got {text!r}")
        if attributes is not None:
            filter_docs(attributes)  # a bad value: typed error before any read
        return RunFilter(statuses=store_search.statuses(status), workflow=workflow, queue=queue,
                         parent_id=self.get_handle(parent).run_id if parent is not None else None,
                         root_id=self.get_handle(root).run_id if root is not None else None,
                         top_level=bool(top_level), created_after=created_after, created_before=created_before,
                         finished_after=finished_after, finished_before=finished_before,
                         attributes=dict(attributes) if attributes else None,
                         before=store_search.decode_cursor(cursor) if cursor is not None else None)


    # --- the web console's counts by status (issue 16) -------------------------------------

    async def count_runs_by_status(self, *, workflow: str | None = None, queue: str | None = None,
                                   created_after: datetime | None = None, created_before: datetime | None = None,
                                   attributes: dict[str, Any] | None = None, top_level: bool = False,
                                   cap: int = 10_000) -> tuple[dict[str, int], bool]:
        """Counts by status among the newest ``cap`` runs matching the filters (those of
        :meth:`list_runs`), and whether ``cap`` was reached (then they are the counts of that
        sample, not of every match): one bounded index range at any table size, where an
        exact count by status reads every matching run."""
        pool = self._require_open()
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 1_000_000:
            raise ConfigurationError(f"cap must be an int from 1 to 1000000, got {cap!r}")
        flt = self._run_filter(None, workflow, queue, created_after, created_before, None, None, None, None,
                               attributes, top_level, None)

        async def read(conn: Conn) -> tuple[dict[str, int], bool]:
            return await store_search.status_sample(conn, flt, cap)

        return await run_typed(pool, read, what="counting runs by status")

    # --- re-driving runs: resume / restart / fork (durable/runtime/redrive.py) -------------

    async def resume(self, run_id: uuid.UUID | str) -> RunHandle[Any]:
        """Resume a failed, cancelled or timed-out top-level run under its id: completed
        operations replay from its history, the failed step (or failed/cancelled child) and
        what follows it run again. Raises RunNotResumableError (a completed or in-flight run,
        or a child run: resume its root), RunNotFoundError; nothing is written then."""
        pool = self._require_open()
        res = await redrive.resume(pool, self.get_handle(run_id).run_id, max_depth=self.settings.max_child_depth)
        self.runs.claim_soon(res.tree_key, res.run_id, res.queue)
        return RunHandle(self, res.run_id, res.workflow)

    async def restart(self, run_id: uuid.UUID | str) -> RunHandle[Any]:
        """Start a new run of the same workflow with the same input (any status); the new
        run's ``origin_id`` names this one."""
        return await self._fork(run_id, 0, "restart")

    async def fork(self, run_id: uuid.UUID | str, *, at: int) -> RunHandle[Any]:
        """Start a new run whose history is the first ``at`` events of this run's (positions
        as ``durable show`` numbers them); operations after them run again. Raises
        ForkPositionError past the end of the history."""
        return await self._fork(run_id, at, "fork")

    async def _fork(self, run_id: uuid.UUID | str, at: int, kind: str) -> RunHandle[Any]:
        pool = self._require_open()
        res = await redrive.fork(pool, self.get_handle(run_id).run_id, at=at, kind=kind)
        self.runs.claim_soon(res.tree_key, res.run_id, res.queue)
        return RunHandle(self, res.run_id, res.workflow)

    # --- the workflow registry, start by name, the worker list (issue 14) -----------------

    async def _publish_workflows(self, pool: Pool) -> None:
        """Write this process's workflow definitions to the registry (only those that changed)."""

        async def publish(conn: Conn) -> list[str]:
            return await catalog.publish(conn, self.owner, all_workflows().values())

        await run_typed(pool, publish, what="registering this process's workflows")

    async def _definition_for_start(self, pool: Pool, workflow: WorkflowDef[Any, Any] | str
                                    ) -> tuple[WorkflowDef[Any, Any], RegisteredWorkflow | None]:
        """The workflow to start: registered here, or (a name only) read from the registry."""
        if not isinstance(workflow, str) or workflow in all_workflows():
            return resolve(workflow), None

        async def lookup(conn: Conn) -> RegisteredWorkflow:
            return await catalog.lookup(conn, workflow)

        row = self._recent_definitions.get(workflow)
        if row is None:
            row = await run_typed(pool, lookup, what=f"looking up workflow {workflow!r} in the registry")
            self._recent_definitions.put(row)
        return catalog.definition(row), row

    async def list_workers(self) -> list[WorkerInfo]:
        """The processes that execute runs on this schema (their heartbeat rows): host, pid,
        queues, workflows, concurrency, last seen, alive; live ones first. A process that
        stopped shows as not alive until the next process to start forgets it (after 7 days)."""
        pool = self._require_open()

        async def read(conn: Conn) -> list[WorkerInfo]:
            return await store_registry.workers(conn)

        return await run_typed(pool, read, what="listing workers")

    async def workers_serving(self, queue: str, workflow: str, version: int) -> int:
        """How many live processes serve ``queue`` and version ``version`` of ``workflow``."""
        pool = self._require_open()

        async def count(conn: Conn) -> int:
            return await store_registry.live_workers_serving(conn, queue, f"{workflow}:{version}")

        return await run_typed(pool, count, what="counting live workers")

    async def _warn_if_unserved(self, wf: WorkflowDef[Any, Any], queue: str) -> None:
        """At most one look per (queue, workflow, version) every 30 s (the workers' list
        changes at the pace of their heartbeats), not one per run."""
        what, now = (queue, wf.name, wf.version), time.monotonic()
        if now - self._served_checked.get(what, -math.inf) < 30.0:
            return
        self._served_checked[what] = now
        if await self.workers_serving(queue, wf.name, wf.version) == 0:
            log.warning("no live worker serves queue %r for workflow %r version %d: the run waits until one "
                        "starts (durable workers lists the processes; start a dispatcher with --queues %s that "
                        "imports the workflow)", queue, wf.name, wf.version, queue,
                        extra={"workflow": wf.name, "queue": queue})


@dataclass(frozen=True)
class _Started:
    handle: RunHandle[Any]
    wf: WorkflowDef[Any, Any]
    queue: str
    local: bool  # executing in this process


def _canonical(value: Any) -> str:
    """JSON text that is equal for equal JSON documents (key order and 1 vs 1.0 aside)."""
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"))


def _same_input_or_conflict(existing: ExistingRun, text: str, key: str | None, input_type: Any) -> None:
    """Starting an existing run again returns it only with the same input: the same JSON, or
    the same value once validated by the workflow's input type (a model's defaults filled in)."""
    given = json.loads(text)
    if _canonical(existing.input) == _canonical(given):
        return
    if input_type is not None:
        try:
            what = "input of an existing run"
            if _canonical(to_jsonable_python(validate(existing.input, input_type, what=what))) == \
                    _canonical(to_jsonable_python(validate(given, input_type, what=what))):
                return
        except PayloadError:  # the stored input no longer fits the type: only equal JSON is the same
            pass
    by = f"idempotency key {key!r}" if key is not None else f"run id {existing.id}"
    raise RunConflictError(
        f"{by} is already used by run {existing.id} of workflow {existing.workflow!r} with a different input; "
        "nothing was started. Use another key (or id) for a different input, or pass the same input to get "
        "the existing run back.")


__all__ = ["Engine"]
