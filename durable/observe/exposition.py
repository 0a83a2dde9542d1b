"""Exposition for durable's metrics: the queue collector (read from the database at scrape
time) and the small HTTP server behind ``/metrics``. Used through :mod:`durable.metrics`,
which re-exports what is public here."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

import psycopg
from psycopg import sql

from ..errors import ConfigurationError
from ..store.inspect import queue_depths_sync
from ..store.rows import QueueDepth

log = logging.getLogger("durable.metrics")

_MAX_LABEL_LEN = 200


def _label(value: Any) -> str:
    if value is None:
        return "unknown"
    text = value if isinstance(value, str) else str(value)
    return text[:_MAX_LABEL_LEN] if text else "unknown"


# --- queue metrics, read at scrape time ----------------------------------------------------

_QUEUE_FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("durable_queue_depth",
     "Runs ready to execute (pending or suspended and due), per queue.", ("queue",)),
    ("durable_queue_oldest_ready_seconds",
     "Age of the oldest ready run (now - its due time), per queue; 0 when none is ready.",
     ("queue",)),
    ("durable_runs_waiting",
     "Runs suspended or pending that are not due yet (waiting for a child, signal, timer, "
     "retry backoff or delayed start), per queue.",
     ("queue",)),
)


class QueueCollector(Collector):
    """Reports queue depth, oldest ready age and waiting runs, read from the database at
    scrape time with one grouped query.

    Keeps one sync connection (connect timeout 2 s, statement timeout 5 s) and reconnects
    after a failure. A database error yields no samples and logs a warning; it never fails
    the scrape. Queues seen once keep being reported (as 0) so graphs drop to zero instead
    of disappearing.
    """

    CONNECT_TIMEOUT_S = 2
    STATEMENT_TIMEOUT_MS = 5000
    WARN_INTERVAL_S = 60.0

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._lock = threading.Lock()
        self._conn: Any = None
        self._known_queues: set[str] = set()
        self._last_warning = 0.0
        self._closed = False

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Lets registry.register() learn the names without touching the database.
        return [GaugeMetricFamily(name, doc, labels=list(labels))
                for name, doc, labels in _QUEUE_FAMILIES]

    def _connect(self) -> Any:
        conn = psycopg.connect(
            self.dsn,
            connect_timeout=self.CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="durable-metrics",
        )
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL("SET statement_timeout TO {}").format(
                sql.Literal(self.STATEMENT_TIMEOUT_MS)))
        except Exception:
            conn.close()
            raise
        return conn

    def _query(self) -> list[QueueDepth]:
        with self._lock:
            if self._closed:
                return []
            reused = self._conn is not None and not self._conn.closed
            if not reused:
                self._drop_connection()
                self._conn = self._connect()
            try:
                return queue_depths_sync(self._conn)
            except Exception:
                self._drop_connection()
                if not reused:
                    raise
            # The kept connection went stale (server restart, idle timeout): retry once.
            self._conn = self._connect()
            try:
                return queue_depths_sync(self._conn)
            except Exception:
                self._drop_connection()
                raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            rows = self._query()
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_warning >= self.WARN_INTERVAL_S:
                self._last_warning = now
                log.warning("queue metrics unavailable (schema %s): %s: %s",
                            self.schema, type(exc).__name__, exc)
            else:
                log.debug("queue metrics unavailable: %s", exc)
            return
        if self._closed:
            return
        depth, oldest, waiting = (GaugeMetricFamily(name, doc, labels=list(labels))
                                  for name, doc, labels in _QUEUE_FAMILIES)
        seen: set[str] = set()
        for row in rows:
            queue = _label(row.queue)
            seen.add(queue)
            depth.add_metric([queue], float(row.ready or 0))
            oldest.add_metric([queue], max(0.0, float(row.oldest_ready_s)) if row.oldest_ready_s is not None else 0.0)
            waiting.add_metric([queue], float(row.waiting or 0))
        with self._lock:
            self._known_queues |= seen
            gone = sorted(self._known_queues - seen)
        for queue in gone:
            depth.add_metric([queue], 0.0)
            oldest.add_metric([queue], 0.0)
            waiting.add_metric([queue], 0.0)
        yield depth
        yield oldest
        yield waiting

    def close(self) -> None:
        """Close the connection; later scrapes yield nothing."""
        with self._lock:
            self._closed = True
            self._drop_connection()



Route = Callable[[], tuple[int, str]]


@dataclass
class MetricsServer:
    """A running metrics HTTP server. ``port`` is the bound port (useful when 0 was asked)."""

    host: str
    port: int
    _server: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _make_handler(registry: CollectorRegistry,
                  routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "durable-metrics"

        def _reply(self, status: int, body: bytes, content_type: str, head: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0] or "/"
            if path == "/metrics":
                try:
                    encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
                    body = encoder(registry)
                except Exception:
                    log.exception("rendering /metrics failed")
                    self._reply(500, b"metrics unavailable\n", "text/plain; charset=utf-8", head)
                    return
                self._reply(200, body, content_type, head)
                return
            route = routes.get(path)
            if route is None:
                known = ", ".join(["/metrics", *sorted(routes)])
                self._reply(404, f"not found; try {known}\n".encode(),
                            "text/plain; charset=utf-8", head)
                return
            try:
                status, text = route()
            except Exception as exc:
                log.exception("metrics server route %s failed", path)
                status, text = 500, f"{type(exc).__name__}: {exc}"
            if not text.endswith("\n"):
                text += "\n"
            self._reply(int(status), text.encode("utf-8"), "text/plain; charset=utf-8", head)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._serve(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("metrics server: %s - %s", self.address_string(), format % args)

    return Handler


def serve(host: str, port: int, registry: CollectorRegistry,
          extra_routes: dict[str, Callable[[], tuple[int, str]]] | None = None) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``extra_routes`` maps paths (e.g. ``"/healthz"``) to callables returning
    ``(status_code, body)``. ``port=0`` binds a free port (see the returned ``.port``).
    Raises :class:`~durable.errors.ConfigurationError` when the address cannot be bound.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port must be an integer 0-65535 (got {port!r})")
    routes = dict(extra_routes or {})
    for path in routes:
        if not path.startswith("/"):
            raise ConfigurationError(f"metrics server route {path!r} must start with '/'")

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    try:
        server = Server((host, port), _make_handler(registry, routes))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: the port is already in use; "
                "choose another port, or pass --metrics-port 0 to pick a free one"
            ) from None
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; check the host "
            "address, choose another port, or pass --metrics-port 0 to pick a free one"
        ) from None
    bound_port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name=f"durable-metrics-{bound_port}", daemon=True)
    thread.start()
    log.info("serving metrics on http://%s:%d/metrics", host, bound_port)
    return MetricsServer(host=host, port=bound_port, _server=server, _thread=thread)
