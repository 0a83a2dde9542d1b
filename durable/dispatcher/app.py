"""The dispatcher: an :class:`durable.Engine` executing runs, wrapped with workflow module
loading, start-up retries, health endpoints, metrics and signal handling.

The background concerns live in small loops with start/stop: claiming, listening and
heartbeating in :mod:`durable.worker` (the engine owns them), the health tick in
:mod:`dispatcher.health`, signal handling in :mod:`dispatcher.shutdown`. Due runs
(timers, retries, delayed starts) and runs whose executor died (expired lease) are picked
up by the claimer's one poll query, so an idle dispatcher costs about one cheap read per
poll interval.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from typing import Any

import durable
from durable.store import connections as db
from durable.observe import metrics
from durable.errors import ConfigurationError, DatabaseUnavailableError, DurableError
from durable.runtime.registry import WorkflowDef, all_versions

try:  # the web console (--ui) needs the [ui] extra
    from durable.ui.serve import ConsoleServer
except ImportError as _exc:
    ConsoleServer = None  # type: ignore[assignment, misc]
    _UI_MISSING = str(_exc)

from .health import Health
from .settings import DispatcherSettings
from .shutdown import Shutdown

log = logging.getLogger("dispatcher")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_SETTINGS = 0, 1, 2

_BACKOFF_START_S, _BACKOFF_MAX_S = 0.5, 15.0


class StartupError(Exception):
    """The dispatcher cannot start; ``code`` is the process exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def import_workflow_modules(modules: tuple[str, ...]) -> list[WorkflowDef[Any, Any]]:
    """Import each module (the current directory is importable) and return the registered
    workflows. Raises StartupError after logging an import failure's traceback."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit/KeyboardInterrupt in module code too
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.error("could not import workflow module %r (--module): %s: %s", name,
                      type(exc).__name__, exc, exc_info=True)
            raise StartupError(f"module {name!r} failed to import; fix it or the --module value "
                               "(see the traceback above)", EXIT_FAILURE) from None
    workflows = all_versions()
    if not workflows:
        raise StartupError(
            f"no workflows are registered after importing {', '.join(modules)}: decorate workflow "
            "functions with @durable.workflow('name') in those modules, or point --module at the "
            "modules that do", EXIT_BAD_SETTINGS)
    return workflows


class Dispatcher:
    """``await Dispatcher(settings).serve()`` runs until SIGTERM/SIGINT and returns the exit
    status. Import the workflow modules first (:func:`import_workflow_modules`)."""

    def __init__(self, settings: DispatcherSettings) -> None:
        self.settings = settings
        self.engine: durable.Engine | None = None
        self.shutdown = Shutdown(settings.shutdown_grace_s)
        self.health = Health(self.readiness)
        self.server: Any = None
        self.collector: Any = None
        self.console: Any = None  # the web console (--ui)

    # --- probes (called from the metrics server's thread) ---------------------------------

    def readiness(self) -> tuple[int, str]:
        e = self.engine
        if e is None or not e.opened:
            return 503, "not ready: connecting to the database"
        if self.shutdown.requested.is_set() or e.closing:
            return 503, "not ready: shutting down"
        if not e.listener.up:
            return 503, "not ready: LISTEN connection down (reconnecting)"
        if e.claimer is not None and not e.claimer.db_ok:
            return 503, "not ready: database unreachable (retrying)"
        return 200, "ready"

    # --- lifecycle ------------------------------------------------------------------------

    async def serve(self) -> int:
        s = self.settings
        self.shutdown.start()
        self.health.start()
        try:
            metrics.install()
            try:
                self.server = metrics.start_metrics_server(s.metrics_host, s.metrics_port,
                                                           extra_routes=self.health.routes())
            except ConfigurationError as exc:
                raise StartupError(str(exc), EXIT_BAD_SETTINGS) from None
            try:
                self.engine = durable.Engine(s.dsn, **s.engine_settings())
            except ConfigurationError as exc:  # e.g. --otel-tracing without the [otel] extra
                raise StartupError(str(exc), EXIT_BAD_SETTINGS) from None
            if not await self._open_engine():
                return EXIT_OK  # asked to stop while waiting for the database
            await self._start_console()
            self._report_ready()
            await self.shutdown.requested.wait()
            if self.console is not None:
                await self.console.stop()
            await self.engine.close(grace=s.shutdown_grace_s)
            log.info("dispatcher stopped cleanly", extra={"owner": self.engine.owner})
            return EXIT_OK
        except StartupError as exc:
            log.error("%s", exc)
            return exc.code
        finally:
            if self.console is not None:
                await self.console.stop()
            if self.engine is not None and self.engine.opened:
                await self.engine.close(grace=0)
            if self.collector is not None:
                metrics.unregister_queue_collector(self.collector)
            if self.server is not None:
                self.server.stop()
            await self.health.stop()
            self.shutdown.stop()

    async def _open_engine(self) -> bool:
        """Open the engine; retry with backoff while the database is unreachable (unless
        --no-wait). Returns False when a signal asked to stop meanwhile."""
        assert self.engine is not None
        delay = _BACKOFF_START_S
        attempts = 0
        while True:
            attempts += 1
            opener = asyncio.create_task(self.engine.open())
            stop = asyncio.create_task(self.shutdown.requested.wait())
            await asyncio.wait({opener, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not opener.done():
                opener.cancel()
                await asyncio.gather(opener, return_exceptions=True)
                return False
            stop.cancel()
            try:
                opener.result()
                if attempts > 1:
                    log.warning("database reachable again after %d attempts; starting", attempts)
                return True
            except DatabaseUnavailableError as exc:
                if self.settings.no_wait:
                    raise StartupError(f"database unreachable and --no-wait given: {exc}", EXIT_FAILURE) from None
                if attempts == 1:
                    log.warning("database unreachable at start: %s Retrying with backoff (up to every %.0f s) "
                                "until it answers; pass --no-wait to fail fast instead", exc, _BACKOFF_MAX_S)
                else:
                    log.debug("database still unreachable (attempt %d): %s", attempts, exc)
            except DurableError as exc:  # schema too new, embedded PostgreSQL missing, bad DSN...
                raise StartupError(f"cannot start: {exc}", EXIT_BAD_SETTINGS) from None
            try:
                await asyncio.wait_for(self.shutdown.requested.wait(), delay)
                return False
            except asyncio.TimeoutError:
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _start_console(self) -> None:
        """``--ui``: serve the web console from this dispatcher's engine."""
        bind = self.settings.ui_bind()
        if bind is None:
            return
        if ConsoleServer is None:
            raise StartupError(f"--ui needs the web console's extra: pip install 'durable[ui]' ({_UI_MISSING})",
                               EXIT_BAD_SETTINGS)
        assert self.engine is not None
        s = self.settings
        try:
            console = ConsoleServer(self.engine, host=bind[0], port=bind[1], token=s.ui_token,
                                    read_only=s.ui_read_only, token_flag="--ui-token")
            url = await console.start()
        except ConfigurationError as exc:  # the port is taken
            raise StartupError(str(exc), EXIT_BAD_SETTINGS) from None
        self.console = console
        log.info("web console at %s%s", url, " (read-only)" if s.ui_read_only else "",
                 extra={"event": "console", "url": url})
        if s.ui_token is None and not s.ui_read_only:
            log.warning("the web console's actions need an access token and none was given: set --ui-token "
                        "(or DURABLE_UI_TOKEN) to cancel, signal or re-drive runs from it")

    def _report_ready(self) -> None:
        e = self.engine
        assert e is not None
        s = self.settings
        try:
            self.collector = metrics.register_queue_collector(e.dsn, s.schema_name)
        except ValueError:  # a collector for these families is already registered in this process
            self.collector = None
        workflows = all_versions()  # every (name, version) this dispatcher claims
        for wf in workflows:
            if wf.queue not in s.queues:
                log.warning("workflow %s defaults to queue %r, which this dispatcher does not serve "
                            "(serving %s); add --queue %s if it should", wf.key, wf.queue,
                            ", ".join(s.queues), wf.queue)
        log.info(
            "dispatcher ready: %d workflow(s) [%s], queues [%s], concurrency %d, database %s, "
            "schema %s, metrics http://%s:%d/metrics", len(workflows), ", ".join(w.key for w in workflows),
            ", ".join(s.queues), s.concurrency, db.describe_dsn(e.dsn), s.schema_name, s.metrics_host,
            self.server.port,
            extra={"event": "ready", "owner": e.owner, "pid": os.getpid(), "metrics_port": self.server.port,
                   "workflows": [w.key for w in workflows], "queues": list(s.queues)})
