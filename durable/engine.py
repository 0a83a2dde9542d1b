"""The Engine: what a service embeds (start runs, wait for results, cancel, signal) and,
with ``execute=True`` (the default), what executes runs in-process. The dispatcher
daemon is an Engine with a CLI, health endpoints and signal handling around it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from .runtime import branches
from .store import connections as db, queries
from .observe import hooks
from . import serde
from .config import EngineSettings
from .errors import ConfigurationError, DurableError, RunCancelledError, RunConflictError, RunFailedError, RunNotFoundError, RunTimeoutError, WorkflowNotFoundError, PayloadError
from .runtime.execution import TERMINAL, Event, Evicted, Execution, Shutdown
from .runtime.journal import Pending, write_pending
from .handle import RunHandle, RunInfo
from .runtime.registry import WorkflowDef, all_workflows, resolve
from .runtime.sync_steps import SyncSteps
from .worker import Claimer, Heartbeat, Listener, Retention, Timeouts

log = logging.getLogger("durable.engine")

_SAFETY_RECHECK_S = 15.0
_RECHECK = object()


def _resolve(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
  # result waits re-read the run this often in case a notification was lost


class Engine:
    """``async with Engine(dsn) as engine:`` — see :class:`~durable.config.EngineSettings`
    for every keyword (``schema``, ``execute``, ``queues``, ``concurrency``, ...)."""

    def __init__(self, dsn: str | None = None, **settings: Any) -> None:
        self.settings = EngineSettings.build(dsn=dsn, **settings)
        self.dsn = ""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channel = f"durable_wake_{self.settings.schema_name}"
        self.pool: Any = None
        self.active: dict[uuid.UUID, Execution] = {}
        self.parked: OrderedDict[uuid.UUID, Execution] = OrderedDict()
        self.loading: set[uuid.UUID] = set()
        self.closing = False
        self.opened = False
        self._results: dict[uuid.UUID, list[asyncio.Future]] = {}
        self._timers: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self.sync_steps = SyncSteps()  # threads of sync steps, so attempts never overlap here
        self.listener = Listener(self)
        self.claimer = Claimer(self) if self.settings.execute else None
        self.heartbeat = Heartbeat(self) if self.settings.execute else None
        self.retention = Retention(self) if self.settings.retention_s is not None else None
        self.timeouts = Timeouts(self) if self.settings.execute else None  # execution timeouts
        from .runtime.lifecycle import Lifecycle

        self.lifecycle = Lifecycle(self)
        self._metrics_servers: list[Any] = []   # servers started by start_metrics_server()
        self._queue_collector: Any = None

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> "Engine":
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self) -> "Engine":
        """Connect (starting embedded PostgreSQL when no DSN is configured), migrate, and
        start the background loops."""
        from .store import migrate

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
        finally:
            await conn.close()
        self.pool = await db.open_pool(self.dsn, schema=s.schema_name, min_size=min(2, s.pool_size),
                                       max_size=s.pool_size, timeout=s.connect_timeout_s)
        self.closing = False
        if s.metrics:
            from .observe import metrics

            metrics.install()  # process-wide and idempotent; close() leaves it attached
        branches.install(asyncio.get_running_loop())  # concurrent branches in workflows
        self.listener.start()
        if self.claimer is not None:
            self.claimer.start()
            self.heartbeat.start()  # type: ignore[union-attr]
        if self.retention is not None:
            self.retention.start()
        if self.timeouts is not None:
            self.timeouts.start()
        self.opened = True
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
        if self.claimer is not None:
            await self.claimer.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.timeouts is not None:
            await self.timeouts.stop()
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        deadline = time.monotonic() + grace
        # executions stop at their next durable point (Context raises Shutdown once we are
        # closing) and give their lease back; a run being loaded starts and does the same
        while (self.active or self.loading) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for ex in list(self.active.values()):
            self._give_back(ex)
            ex.stop(Shutdown())
        for ex in list(self.parked.values()):
            ex.stop(Shutdown())
        self.parked.clear()
        if self.pool is not None:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE durable_runs SET lease_owner = NULL WHERE lease_owner = %s AND status = 'suspended'",
                        (self.owner,))
            except Exception as exc:
                log.warning("could not clear sticky hints on close: %s", exc)
        tasks = [ex.task for ex in list(self.active.values()) if ex.task is not None] + list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        await self.listener.stop()
        for futs in self._results.values():
            for f in futs:
                if not f.done():
                    f.set_result(None)
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self._metrics_servers or self._queue_collector is not None:
            await asyncio.to_thread(self._stop_metrics_servers)  # shutdown() blocks up to 0.5 s
        self.opened = False

    # --- telemetry -------------------------------------------------------------------------

    def start_metrics_server(self, host: str = "127.0.0.1", port: int = 9464, *,
                             queue_metrics: bool = True,
                             extra_routes: dict[str, Any] | None = None) -> Any:
        """Serve ``durable.metrics.REGISTRY`` on ``http://host:port/metrics`` from a daemon
        thread and return the :class:`~durable.metrics.MetricsServer` (``.port``, ``.url``,
        ``.stop()``); ``port=0`` picks a free port. With ``queue_metrics`` the registry also
        reports queue depth / oldest ready age / waiting runs of this engine's schema, read
        from the database at scrape time. ``close()`` stops what this method started.

        Services with their own HTTP server mount the same registry instead, e.g.
        ``make_asgi_app(registry=durable.metrics.REGISTRY)``.
        """
        from .observe import metrics

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
            from .observe import metrics

            metrics.unregister_queue_collector(self._queue_collector)
            self._queue_collector = None

    @property
    def ready(self) -> bool:
        """Database reachable and listener up (for readiness probes)."""
        return self.opened and not self.closing and self.listener.up

    def _require_open(self) -> None:
        if not self.opened:
            raise ConfigurationError("the engine is not open: use `async with Engine(...) as engine:` "
                                     "or `await engine.open()` first")

    # --- starting runs -------------------------------------------------------------------

    def workflow_keys(self) -> list[str]:
        return [wf.key for wf in all_workflows().values()]

    def capacity(self) -> int:
        return self.settings.concurrency - len(self.active) - len(self.loading)

    async def start(self, workflow: WorkflowDef | str, input: Any = None, *, id: uuid.UUID | str | None = None,
                    key: str | None = None, queue: str | None = None, timeout: float | None = None,
                    start_at: Any = None) -> RunHandle:
        """Start a run and return its handle. With ``id=`` or ``key=`` (an idempotency
        key), starting twice returns the same run."""
        self._require_open()
        wf = resolve(workflow)
        if not wf.takes_input and input is not None:
            raise PayloadError(f"workflow {wf.name!r} takes no input (its signature is (ctx)), but one was given")
        text, _ = serde.roundtrip(input, wf.input_type, what=f"input of workflow {wf.name!r}",
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
                 and start_at is None and self.capacity() > 0)

        async def insert(conn: Any) -> tuple[Any, Any]:
            cur = await conn.execute(queries.START_RUN, {
                "id": run_id, "workflow": wf.name, "version": wf.version, "queue": q, "leased": local,
                "input": text, "key": key, "timeout": tmo, "owner": self.owner, "ttl": self.settings.lease_ttl_s,
                "start_at": start_at})
            row = await cur.fetchone()
            if row is not None:
                return row, None
            found = await (await conn.execute(queries.FIND_RUN_FOR_START,
                                              {"id": run_id, "key": key, "workflow": wf.name})).fetchone()
            return None, found

        row, existing = await self._db(insert, f"start of a {wf.name!r} run")
        if row is None:
            if existing is None:  # raced with a delete (retention): try once more
                raise RunConflictError(f"run {run_id} could not be started; retry")
            if existing[1] != wf.name:
                raise RunConflictError(
                    f"run id {existing[0]} is already used by a run of workflow {existing[1]!r}, not "
                    f"{wf.name!r}; choose another id/key")
            return RunHandle(self, existing[0], wf.name)
        hooks.emit("run.started", run_id=run_id, workflow=wf.name, queue=q, parent_run_id=None)
        if tmo is not None and self.timeouts is not None:
            self.timeouts.note(tmo)
        if not local and row[4] is not None and row[4] > 0:  # a delayed start: claim it when due
            self.claim_when_due(run_id, q, row[4])
        if local:
            claim = {"id": run_id, "root_id": run_id, "parent_id": None, "lease_token": row[2], "queue": q,
                     "input": json.loads(text), "attempt": 1, "depth": 0, "prev_status": "pending",
                     "wake_latency_s": None, "last_seq": 0}
            self._begin(claim, wf, [], "start")
        return RunHandle(self, run_id, wf.name)

    async def run(self, workflow: WorkflowDef | str, input: Any = None, *, timeout: float | None = None,
                  **options: Any) -> Any:
        """Start a run and wait for its result."""
        handle = await self.start(workflow, input, **options)
        return await handle.result(timeout=timeout)

    def get_handle(self, run_id: uuid.UUID | str) -> RunHandle:
        try:
            rid = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise ConfigurationError(f"{run_id!r} is not a run id (a UUID)") from None
        return RunHandle(self, rid, None)

    # --- executing -----------------------------------------------------------------------

    def _begin(self, claim: dict[str, Any], wf: WorkflowDef, history: list[Event], source: str) -> None:
        if claim.get("deadline_in_s") is not None and self.timeouts is not None:
            self.timeouts.note(claim["deadline_in_s"])
        ex = Execution(self, claim, wf, history)
        self.active[ex.run_id] = ex
        ex.start()
        hooks.emit("run.resumed", run_id=ex.run_id, workflow=wf.name, source=source,
                   wake_latency_s=claim.get("wake_latency_s") if claim.get("prev_status") == "suspended" else None)

    def on_claimed(self, claim: dict[str, Any], source: str) -> None:
        run_id = claim["id"]
        timer = self._timers.pop(run_id, None)
        if timer:
            timer.cancel()
        ex = self.parked.pop(run_id, None)
        if ex is not None and ex.park_future is not None and not ex.park_future.done():
            if claim.get("deadline_in_s") is not None and self.timeouts is not None:
                self.timeouts.note(claim["deadline_in_s"])
            self.active[run_id] = ex
            ex.park_future.set_result(claim)
            hooks.emit("run.resumed", run_id=run_id, workflow=ex.wf.name, source=source,
                       wake_latency_s=claim.get("wake_latency_s") if claim.get("prev_status") == "suspended" else None)
            return
        self.replay_claimed(claim, source)

    def replay_claimed(self, claim: dict[str, Any], source: str) -> None:
        """Execute a claimed run from its journal (cold)."""
        self.loading.add(claim["id"])
        self._spawn(self._load_and_begin(claim, source))

    async def _load_and_begin(self, claim: dict[str, Any], source: str) -> None:
        run_id = claim["id"]
        try:
            wf = next((w for w in all_workflows().values()
                       if w.name == claim["workflow"] and w.version == claim["version"]), None)
            if wf is None:  # unregistered since the claim: give it back
                await self._release_soon(run_id, claim["lease_token"])
                return
            history: list[Event] = []
            if claim.get("last_seq"):
                async with self.pool.connection() as conn:
                    cur = await conn.execute(queries.LOAD_HISTORY, (run_id,))
                    history = [Event(r[0], r[1], r[3], r[4], r[5] or {}, r[2]) for r in await cur.fetchall()]
            self._begin(claim, wf, history, source)
        except Exception as exc:
            log.warning("run %s: could not start its execution (%s); giving its lease back", run_id, exc)
            self._spawn(self._release_soon(run_id, claim["lease_token"]))
        finally:
            self.loading.discard(run_id)

    def execution_ended(self, ex: Execution, reason: str) -> None:
        if self.active.get(ex.run_id) is ex:
            del self.active[ex.run_id]
        if self.parked.get(ex.run_id) is ex:
            del self.parked[ex.run_id]
        if reason in ("shutdown", "database"):
            # stopped at a durable point (graceful shutdown) or by a database error
            self._give_back(ex)
        if reason != "terminal":
            self._wake_result_waiters(ex.run_id)  # they re-read the database
        if reason not in ("terminal", "nondeterminism") or (self.claimer is not None and self.claimer.starved):
            # a finished run frees capacity; that only matters when the claimer left due
            # runs unclaimed for lack of it (otherwise this would cost a claim query per run)
            self.kick_claimer()

    async def park(self, ex: Execution, fire_at: float | None, *, due_now: bool, db_now: float) -> dict[str, Any]:
        """Keep a suspended run's coroutine in memory until this process re-claims it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        ex.park_future = fut
        if self.active.get(ex.run_id) is ex:
            del self.active[ex.run_id]
        if self.closing:
            raise Shutdown()
        self.parked[ex.run_id] = ex
        while len(self.parked) > self.settings.max_parked:
            _, old = self.parked.popitem(last=False)
            old.stop(Evicted())
        if due_now:
            self._spawn(self.claim_one(ex.run_id, "local"))
        elif fire_at is not None:
            self._arm(ex.run_id, fire_at - db_now)
        self.kick_claimer()
        try:
            return await fut
        finally:
            ex.park_future = None

    def _arm(self, run_id: uuid.UUID, delay: float, tries: int = 0) -> None:
        """Claim ``run_id`` here after ``delay`` seconds (its local timer; one per run)."""
        old = self._timers.pop(run_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[run_id] = loop.call_later(max(0.0, delay), self._timer_fired, run_id, tries)

    def _timer_fired(self, run_id: uuid.UUID, tries: int = 0) -> None:
        self._timers.pop(run_id, None)
        self._spawn(self.claim_one(run_id, "local", tries))

    def claim_when_due(self, run_id: uuid.UUID, queue: str, delay: float | None = None) -> None:
        """A run this process created is due later (a delayed start, a retry attempt's
        backoff): claim it when it is due rather than at the next poll."""
        if not self.settings.execute or self.closing or queue not in self.settings.queues:
            return
        if delay is not None:
            self._arm(run_id, delay)
        else:
            self._spawn(self.claim_one(run_id, "local"))  # not due yet: it arms its timer

    async def claim_one(self, run_id: uuid.UUID, source: str, tries: int = 0) -> bool:
        if self.closing or not self.settings.execute:
            return False
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(queries.CLAIM_ONE, {
                    "id": run_id, "workflows": self.workflow_keys(), "owner": self.owner,
                    "ttl": self.settings.lease_ttl_s})
                row = await cur.fetchone()
                if row is None:
                    state = await (await conn.execute(queries.RUN_DUE_IN, (run_id,))).fetchone()
        except Exception as exc:
            log.warning("run %s: claim failed (%s); the poll will retry", run_id, exc)
            return False
        if row is None:
            if state is not None and state[0] in ("pending", "suspended") and state[1] is not None \
                    and not self.closing:
                if state[1] > 0:  # not due yet by the database clock: when it is
                    self._arm(run_id, state[1] + 0.002)
                elif tries < 50:  # due, but its row was locked for a moment (a sender, a wake)
                    self._arm(run_id, 0.02, tries + 1)
            return False
        hooks.emit("claim.batch", count=1, source=source)
        self.on_claimed(row, source)
        return True

    def kick_claimer(self) -> None:
        if self.claimer is not None:
            self.claimer.kick()

    def catch_up(self) -> None:
        """After (re)connecting the listener: claim what is due and re-check result waits."""
        self.kick_claimer()
        for run_id in list(self._results):
            self._wake_result_waiters(run_id)

    def on_wake_notification(self, run_id: uuid.UUID, owner: str) -> None:
        ex = self.active.get(run_id)
        if ex is not None:
            ex.kick()  # running here: re-evaluate its waits
        elif run_id in self.parked:
            self._spawn(self.claim_one(run_id, "notify"))
        elif not owner or owner == self.owner:
            self.kick_claimer()

    def on_done_notification(self, payload: str) -> None:
        try:
            self._wake_result_waiters(uuid.UUID(payload))
        except ValueError:
            pass

    def on_cancel_notification(self, payload: str) -> None:
        self.lifecycle.on_cancel_notification(payload)

    def _give_back(self, ex: Execution) -> None:
        """Release ``ex``'s lease (its buffered outcomes journaled first) so any process can
        resume the run now rather than after lease expiry."""
        if ex.token is not None:
            token, ex.token = ex.token, None
            pending, ex._pending = ex._pending, []
            self._spawn(self._release_soon(ex.run_id, token, pending, ex.next_seq))

    async def _release_soon(self, run_id: uuid.UUID, token: int, pending: list[Pending] = (),  # type: ignore[assignment]
                            first_seq: int = 0) -> None:
        """Release a lease, first journaling the run's buffered outcomes (a finished step
        must not run again), retrying with backoff while the database is unreachable; gives
        up after one lease TTL (by then the lease has expired and anyone may claim the run)."""
        deadline = time.monotonic() + self.settings.lease_ttl_s
        delay = 0.2
        while self.pool is not None:
            try:
                async with self.pool.connection() as conn:
                    try:
                        written = await write_pending(conn, run_id, token, first_seq, list(pending))
                    except psycopg.errors.UniqueViolation:
                        # an earlier write of the first of these events committed but its
                        # answer was lost with the connection (a server restart): write the rest
                        row = await (await conn.execute(queries.LAST_SEQ, (run_id,))).fetchone()
                        done = max(0, int(row[0]) - first_seq + 1) if row else 0
                        if done == 0:
                            raise
                        pending, first_seq = list(pending)[done:], first_seq + done
                        continue
                    if written:
                        await conn.execute(queries.RELEASE, {"id": run_id, "token": token})
                return
            except Exception as exc:
                if time.monotonic() + delay >= deadline:
                    log.info("run %s: could not release its lease (%s); it resumes after lease expiry",
                             run_id, exc)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _spawn(self, coro: Any) -> None:
        task = branches.create_outside(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- results -------------------------------------------------------------------------

    def deliver_result(self, run_id: uuid.UUID, status: str, result: Any, error: Any) -> None:
        for fut in self._results.pop(run_id, ()):
            if not fut.done():
                fut.set_result((status, result, error))

    def _wake_result_waiters(self, run_id: uuid.UUID) -> None:
        for fut in self._results.pop(run_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def result(self, run_id: uuid.UUID, *, timeout: float | None = None,
                     workflow: str | None = None) -> Any:
        """Wait for a run (following continue-as-new) and return its result, or raise
        RunFailedError / RunCancelledError; RunTimeoutError after ``timeout`` seconds."""
        self._require_open()
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        watched: uuid.UUID | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RunTimeoutError(f"run {run_id} did not finish within {timeout} s (it keeps running; "
                                      "wait again or cancel it)")
            fut: asyncio.Future = loop.create_future()
            if run_id in self.active or run_id in self.parked or run_id in self.loading:
                self._results.setdefault(run_id, []).append(fut)
            else:
                state = await self._chain_state(run_id)
                if state["status"] in TERMINAL:
                    return self._outcome(state)
                live = state["id"]
                self._results.setdefault(live, []).append(fut)
                if watched != live:
                    async def watch(conn: Any) -> None:
                        await conn.execute(queries.WATCH_RUN, (live,))

                    await self._db(watch, f"watching run {live}")
                    watched = live
                    state = await self._chain_state(run_id)  # it may have finished meanwhile
                    if state["status"] in TERMINAL:
                        fut.cancel()
                        return self._outcome(state)
            wait = _SAFETY_RECHECK_S if remaining is None else min(remaining, _SAFETY_RECHECK_S)
            timer = loop.call_later(wait, _resolve, fut, _RECHECK)
            try:
                got = await fut
            finally:
                timer.cancel()
            if got is _RECHECK:
                for futs in self._results.values():
                    if fut in futs:
                        futs.remove(fut)
                continue
            if got is not None:
                status, result, error = got
                return self._outcome({"id": run_id, "status": status, "result": result, "error": error,
                                      "workflow": workflow})

    async def _db(self, fn: Any, what: str) -> Any:
        """``await fn(conn)`` with transient conflicts retried; driver errors become typed."""
        try:
            return await db.run_retrying(self.pool, fn, what=what)
        except psycopg.Error as exc:
            raise db.typed_error(exc, what) from exc
        except psycopg_pool.PoolTimeout as exc:
            raise db.typed_error(psycopg.OperationalError(str(exc)), what) from exc

    async def _chain_state(self, run_id: uuid.UUID) -> dict[str, Any]:
        async def read(conn: Any) -> Any:
            return await (await conn.execute(queries.RUN_CHAIN_STATE, (run_id,))).fetchone()

        row = await self._db(read, f"reading run {run_id}")
        if row is None:
            raise RunNotFoundError(run_id)
        return {"id": row[0], "status": row[1], "result": row[2], "error": row[3], "workflow": row[4]}

    @staticmethod
    def _outcome(state: dict[str, Any]) -> Any:
        status = state["status"]
        if status == "completed":
            result = state["result"]
            wf = state.get("workflow")
            if wf:
                try:
                    return serde.validate(result, resolve(wf).result_type, what=f"result of {wf!r}")
                except WorkflowNotFoundError:
                    return result
            return result
        if status == "failed":
            raise RunFailedError(state["id"], state["error"], state.get("workflow"))
        reason = (state.get("error") or {}).get("reason") if isinstance(state.get("error"), dict) else None
        raise RunCancelledError(state["id"], reason)

    async def info(self, run_id: uuid.UUID) -> RunInfo:
        self._require_open()

        async def read(conn: Any) -> tuple[Any, list[str]]:
            cur = await conn.execute(queries.RUN_INFO, (run_id,))
            return await cur.fetchone(), [c.name for c in cur.description] if cur.description else []

        row, names = await self._db(read, f"reading run {run_id}")
        if row is None:
            raise RunNotFoundError(run_id)
        return RunInfo(**dict(zip(names, row)))

    # --- signals and cancellation (see lifecycle.py) -------------------------------------

    async def signal(self, run_id: uuid.UUID | str, name: str, payload: Any = None, *,
                     delivery_id: str | None = None) -> bool:
        """Send a signal; returns False when ``delivery_id`` was already delivered."""
        return await self.lifecycle.signal(self.get_handle(run_id).run_id, name, payload, delivery_id)

    async def cancel(self, run_id: uuid.UUID | str, *, graceful: bool = False, reason: str = "cancelled") -> int:
        """Cancel a run and its in-flight descendants; returns how many runs were cancelled
        (0 when it had already finished). ``graceful=True`` asks the run to cancel itself."""
        return await self.lifecycle.cancel(self.get_handle(run_id).run_id, graceful=graceful, reason=reason)


__all__ = ["Engine", "RunHandle", "RunInfo", "DurableError"]
