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
import os
import socket
import uuid
from typing import Any, TypeVar, overload

from .config import EngineSettings
from .errors import ConfigurationError, PayloadError, RunConflictError, RunNotFoundError
from .handle import RunHandle
from .observe import hooks, metrics
from .observe.exposition import MetricsServer, QueueCollector
from .runtime import branches, cancel, signals
from .runtime.notifications import Notifications
from .runtime.registry import WorkflowDef, resolve
from .runtime.results import ResultWaits
from .runtime.schedules import Schedules
from .runtime.runs import RunTable
from .serde import roundtrip
from .store import connections as db
from .store import migrate
from .store import runs as store_runs
from .store.connections import Conn, Pool, run_typed
from .store.rows import Claim, ExistingRun, RunInfo, Started, tree_key_of
from .worker import Claimer, Heartbeat, Listener, Retention, Scheduler, Timeouts

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


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
        if s.metrics:
            metrics.install()  # process-wide and idempotent; close() leaves it attached
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
        """Serve ``durable.metrics.REGISTRY`` on ``http://host:port/metrics`` from a daemon
        thread and return the :class:`~durable.observe.exposition.MetricsServer` (``.port``,
        ``.url``, ``.stop()``); ``port=0`` picks a free port. With ``queue_metrics`` the
        registry also reports queue depth / oldest ready age / waiting runs of this engine's
        schema, read from the database at scrape time. ``close()`` stops what this method
        started.

        Services with their own HTTP server mount the same registry instead, e.g.
        ``make_asgi_app(registry=durable.metrics.REGISTRY)``.
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
                    start_at: Any = None) -> RunHandle[R]: ...

    @overload
    async def start(self, workflow: str, input: Any = None, *, id: uuid.UUID | str | None = None,
                    key: str | None = None, queue: str | None = None, timeout: float | None = None,
                    start_at: Any = None) -> RunHandle[Any]: ...

    async def start(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *,
                    id: uuid.UUID | str | None = None, key: str | None = None, queue: str | None = None,
                    timeout: float | None = None, start_at: Any = None) -> RunHandle[Any]:
        """Start a run and return its handle. With ``id=`` or ``key=`` (an idempotency
        key), starting twice returns the same run."""
        pool = self._require_open()
        wf = resolve(workflow)
        if not wf.takes_input and input is not None:
            raise PayloadError(f"workflow {wf.name!r} takes no input (its signature is (ctx)), but one was given")
        text, _ = roundtrip(input, wf.input_type, what=f"input of workflow {wf.name!r}",
                            limit=self.settings.payload_limit_bytes)
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
        local = (self.settings.execute and not self.closing and q in self.settings.queues
                 and start_at is None and self.runs.capacity() > 0)

        async def insert(conn: Conn) -> tuple[Started | None, ExistingRun | None]:
            started = await store_runs.start_run(
                conn, id=run_id, workflow=wf.name, version=wf.version, queue=q, leased=local, input=text, key=key,
                timeout=tmo, owner=self.owner, ttl=self.settings.lease_ttl_s, start_at=start_at)
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
            return RunHandle(self, existing.id, wf.name)
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
        return RunHandle(self, run_id, wf.name)

    @overload
    async def run(self, workflow: WorkflowDef[I, R], input: Any = None, *, timeout: float | None = None,
                  **options: Any) -> R: ...

    @overload
    async def run(self, workflow: str, input: Any = None, *, timeout: float | None = None,
                  **options: Any) -> Any: ...

    async def run(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *, timeout: float | None = None,
                  **options: Any) -> Any:
        """Start a run and wait for its result."""
        handle = await self.start(workflow, input, **options)
        return await handle.result(timeout=timeout)

    def get_handle(self, run_id: uuid.UUID | str) -> RunHandle[Any]:
        try:
            rid = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise ConfigurationError(f"{run_id!r} is not a run id (a UUID)") from None
        return RunHandle(self, rid, None)

    # --- results and state ---------------------------------------------------------------

    async def result(self, run_id: uuid.UUID, *, timeout: float | None = None, workflow: str | None = None) -> Any:
        """Wait for a run (following continue-as-new) and return its result, or raise
        RunFailedError / RunCancelledError; RunTimeoutError after ``timeout`` seconds."""
        pool = self._require_open()
        return await self.results.result(pool, run_id, timeout=timeout, workflow=workflow, local=self.runs.has)

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


__all__ = ["Engine"]
