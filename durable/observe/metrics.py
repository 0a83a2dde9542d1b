"""Prometheus metrics for durable, fed by the in-process hook bus.

Everything lives in a dedicated :data:`REGISTRY` (not prometheus_client's global default),
so an embedding application decides where it is exposed. What ``/metrics`` serves is
:data:`SERVED_REGISTRY`: REGISTRY plus prometheus_client's process, platform and GC
collectors; neither exports ``*_created`` series (see :mod:`durable.observe.exported`):

* the dispatcher serves it on ``/metrics``; an embedding service can do the same with
  ``engine.start_metrics_server(host, port)`` (this registry plus the queue collector of
  the engine's schema; stopped by ``engine.close()``) or :func:`start_metrics_server`;
* an application with its own HTTP server can return :func:`metrics_text` from a route,
  or mount ``prometheus_client.make_asgi_app(registry=SERVED_REGISTRY)`` /
  ``make_wsgi_app(registry=SERVED_REGISTRY)``;
* an application that already exposes the global registry can bridge with
  ``prometheus_client.REGISTRY.register(durable.metrics.REGISTRY)`` (a registry is a
  collector; the process collectors are left out of REGISTRY so they do not clash with
  the global registry's own).

Where runs are counted: ``durable_runs_started_total`` (and ``durable_children_started_total``)
where a run *begins executing* for the first time (its first attempt, with an empty journal),
in the process that executes it, so a dispatcher's counts are complete even when API clients
start the runs (retry attempts are not new runs; a run given back at shutdown before its
first durable operation is counted again where it resumes, one taken over after lease expiry
before it wrote anything is not). ``durable_runs_requested_total`` counts the runs this process created
(``engine.start``, child starts, continue-as-new and retry successors), wherever they execute.
Label sets are initialised (0) for every workflow registered when an engine opens
(:func:`declare_workflows`), and for every fixed reason and source, so panels show 0 rather
than "No data".

Event metrics are updated by one hook handler attached with :func:`install` and removed
with :func:`uninstall`. Queue metrics are read from the database at scrape time by a
:class:`QueueCollector` (one grouped query per scrape).

Labels are low-cardinality only: workflow, step, queue, outcome, source. Never run ids.

Wake latency (``durable_wake_latency_seconds``, by the waiting parent's workflow) is observed
once per child outcome a parent receives: the child's terminal commit to the parent
journaling it, on the database clock. ``durable_resume_latency_seconds`` (by wake source)
is observed once per resume of a suspended run: due time to resumed, whatever woke it.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from . import hooks
from .exported import BUILD_INFO, REGISTRY, SERVED_REGISTRY
from .exposition import MetricsServer, QueueCollector, _label, serve

log = logging.getLogger("durable.metrics")

__all__ = [
    "REGISTRY",
    "SERVED_REGISTRY",
    "BUILD_INFO",
    "declare_workflows",
    "install",
    "uninstall",
    "installed",
    "QueueCollector",
    "register_queue_collector",
    "unregister_queue_collector",
    "metrics_text",
    "start_metrics_server",
    "MetricsServer",
]

# --- buckets -------------------------------------------------------------------------------

WAKE_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
RUN_DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 4 * 3600.0, 24 * 3600.0, 7 * 24 * 3600.0,
)
STEP_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 900.0,
)
CLAIM_BATCH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
HEARTBEAT_LEASE_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)

# --- event metrics -------------------------------------------------------------------------
# prometheus_client's Counter appends "_total" to the exposed sample name itself.

RUNS_STARTED = Counter(
    "durable_runs_started", "Runs that began executing here for the first time (attempt 1, "
    "empty journal: top-level runs, children and continue-as-new successors), counted in the "
    "process that executes them.",
    ("workflow", "queue"), registry=REGISTRY,
)
RUNS_REQUESTED = Counter(
    "durable_runs_requested", "Runs this process created (engine.start, child starts, "
    "continue-as-new and retry successors), wherever they execute.",
    ("workflow", "queue"), registry=REGISTRY,
)
RUNS_FINISHED = Counter(
    "durable_runs_finished", "Runs that reached a final status, by outcome "
    "(completed|failed|cancelled|continued).",
    ("workflow", "queue", "outcome"), registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "durable_run_duration_seconds", "Run duration from start to final status, by outcome.",
    ("workflow", "outcome"), buckets=RUN_DURATION_BUCKETS, registry=REGISTRY,
)
RUN_RESUMES = Counter(
    "durable_run_resumes", "Run executions resumed, by wake source (start|notify|poll|local).",
    ("source",), registry=REGISTRY,
)
RUN_SUSPENSIONS = Counter(
    "durable_run_suspensions", "Runs suspended (waiting for a child, signal or timer).",
    ("workflow",), registry=REGISTRY,
)
WAKE_LATENCY = Histogram(
    "durable_wake_latency_seconds",
    "Time from a child's terminal commit to its parent receiving the outcome (one observation "
    "per child outcome), by the parent's workflow.",
    ("workflow",), buckets=WAKE_LATENCY_BUCKETS, registry=REGISTRY,
)
RESUME_LATENCY = Histogram(
    "durable_resume_latency_seconds",
    "Time from a suspended run becoming due (child finished, signal, timer) to it resuming "
    "(one observation per resume; several causes may share one), by wake source.",
    ("source",), buckets=WAKE_LATENCY_BUCKETS, registry=REGISTRY,
)
STEPS = Counter(
    "durable_steps", "Step attempts that finished, by outcome (completed|failed; failed = "
    "retries exhausted or not retryable).",
    ("workflow", "step", "outcome"), registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "durable_step_duration_seconds", "Duration of one step attempt (completed or failed).",
    ("workflow", "step"), buckets=STEP_DURATION_BUCKETS, registry=REGISTRY,
)
STEP_RETRIES = Counter(
    "durable_step_retries", "Step attempts that failed and were scheduled for a retry.",
    ("workflow", "step"), registry=REGISTRY,
)
CHILDREN_STARTED = Counter(
    "durable_children_started", "Child runs that began executing here for the first time "
    "(attempt 1), by child workflow, counted in the process that executes them.",
    ("workflow",), registry=REGISTRY,
)
CHILDREN_FINISHED = Counter(
    "durable_children_finished", "Child runs finished, by child workflow and outcome "
    "(completed|failed|cancelled).",
    ("workflow", "outcome"), registry=REGISTRY,
)
CLAIMS = Counter(
    "durable_claims", "Runs claimed for execution, by claim source (poll|notify|wake).",
    ("source",), registry=REGISTRY,
)
CLAIM_BATCH_SIZE = Histogram(
    "durable_claim_batch_size", "Runs returned by one claim query (0 = empty claim).",
    buckets=CLAIM_BATCH_BUCKETS, registry=REGISTRY,
)
LEASE_LOST = Counter(
    "durable_lease_lost", "Leases lost while executing (another process took the run over, "
    "or a write found the lease gone); a cancel is not counted here.",
    ("workflow",), registry=REGISTRY,
)
HEARTBEATS = Counter(
    "durable_heartbeats", "Lease heartbeat rounds.", registry=REGISTRY,
)
HEARTBEAT_LEASES = Histogram(
    "durable_heartbeat_leases", "Leases renewed by one heartbeat round.",
    buckets=HEARTBEAT_LEASE_BUCKETS, registry=REGISTRY,
)
WAKE_NOTIFICATIONS = Counter(
    "durable_wake_notifications", "Wake notifications received (LISTEN/NOTIFY).",
    registry=REGISTRY,
)
WAKE_POLLS = Counter(
    "durable_wake_polls", "Fallback polls for due runs.", registry=REGISTRY,
)
RUNS_IN_FLIGHT = Gauge(
    "durable_runs_in_flight", "Runs executing in this process right now (holding a lease; "
    "suspended runs parked in memory are not counted).", registry=REGISTRY,
)
EXECUTIONS_ENDED = Counter(
    "durable_executions_ended", "Executions that ended in this process, by reason "
    "(terminal|continued|cancelled|finished|stale|lease_lost|evicted|shutdown|database|"
    "nondeterminism|error).",
    ("reason",), registry=REGISTRY,
)
CASCADE_CANCELLED = Counter(
    "durable_cascade_cancelled", "Runs cancelled by parent-close cascades.", registry=REGISTRY,
)
CASCADE_TRUNCATED = Counter(
    "durable_cascade_truncated", "Cascades stopped at the depth limit (the rest is finished "
    "later).", registry=REGISTRY,
)

# --- the hook handler ----------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """A finite, non-negative float, or None when the field is missing or unusable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None
    return number


class _Children:
    """Caches labelled children so the hot path skips prometheus_client's label lock."""

    __slots__ = ("_metric", "_cache")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: Any) -> Any:
        try:
            return self._cache[values]  # hot path: these exact raw values were seen before
        except (KeyError, TypeError):
            pass
        key = tuple(_label(v) for v in values)
        child = self._cache.get(key)
        if child is None:
            child = self._cache.setdefault(key, self._metric.labels(*key))
        try:
            self._cache[values] = child
        except TypeError:  # an unhashable raw value: only its label form is cached
            pass
        return child


_runs_started = _Children(RUNS_STARTED)
_runs_requested = _Children(RUNS_REQUESTED)
_runs_finished = _Children(RUNS_FINISHED)
_run_duration = _Children(RUN_DURATION)
_run_resumes = _Children(RUN_RESUMES)
_run_suspensions = _Children(RUN_SUSPENSIONS)
_steps = _Children(STEPS)
_step_duration = _Children(STEP_DURATION)
_step_retries = _Children(STEP_RETRIES)
_children_started = _Children(CHILDREN_STARTED)
_children_finished = _Children(CHILDREN_FINISHED)
_wake_latency = _Children(WAKE_LATENCY)
_resume_latency = _Children(RESUME_LATENCY)
_claims = _Children(CLAIMS)
_lease_lost = _Children(LEASE_LOST)
_executions_ended = _Children(EXECUTIONS_ENDED)

_in_flight_lock = threading.Lock()
_in_flight: set[Any] = set()
_in_flight_anonymous = 0  # execution events without a usable run_id


def _run_finished(outcome: str) -> Callable[[Mapping[str, Any]], None]:
    def handle(f: Mapping[str, Any]) -> None:
        workflow = f.get("workflow")
        _runs_finished(workflow, f.get("queue"), outcome).inc()
        duration = _number(f.get("duration_s"))
        if duration is not None:
            _run_duration(workflow, outcome).observe(duration)

    return handle


def _on_run_started(f: Mapping[str, Any]) -> None:
    _runs_requested(f.get("workflow"), f.get("queue")).inc()


def _on_run_resumed(f: Mapping[str, Any]) -> None:
    source = f.get("source")
    _run_resumes(source).inc()
    latency = _number(f.get("wake_latency_s"))
    if latency is not None:
        _resume_latency(source).observe(latency)
    _in_flight_add(f)


def _on_run_suspended(f: Mapping[str, Any]) -> None:
    _run_suspensions(f.get("workflow")).inc()
    key = _run_key(f)
    if key is not None:  # parked: no longer executing (its execution.ended comes later, or never)
        with _in_flight_lock:
            _in_flight.discard(key)
            RUNS_IN_FLIGHT.set(len(_in_flight) + _in_flight_anonymous)


def _run_key(f: Mapping[str, Any]) -> Any:
    """The run id as a set key, or None when missing or unhashable."""
    run_id = f.get("run_id")
    try:
        hash(run_id)
    except TypeError:
        return None
    return run_id


def _on_execution_started(f: Mapping[str, Any]) -> None:
    global _in_flight_anonymous
    if f.get("first") is True and f.get("attempt", 1) == 1:  # the run begins: count it where it runs
        workflow = f.get("workflow")
        _runs_started(workflow, f.get("queue")).inc()
        if f.get("parent_run_id") is not None:
            _children_started(workflow).inc()
    key = _run_key(f)
    with _in_flight_lock:
        if key is None:
            _in_flight_anonymous += 1
        else:
            _in_flight.add(key)
        RUNS_IN_FLIGHT.set(len(_in_flight) + _in_flight_anonymous)


def _in_flight_add(f: Mapping[str, Any]) -> None:
    """A parked run resumed: executing again (a set, so a repeat changes nothing)."""
    key = _run_key(f)
    if key is not None:
        with _in_flight_lock:
            _in_flight.add(key)
            RUNS_IN_FLIGHT.set(len(_in_flight) + _in_flight_anonymous)


def _on_execution_ended(f: Mapping[str, Any]) -> None:
    global _in_flight_anonymous
    _executions_ended(f.get("reason")).inc()
    key = _run_key(f)
    with _in_flight_lock:
        # An end without a matching start (started before install()) changes nothing.
        if key is None:
            _in_flight_anonymous = max(0, _in_flight_anonymous - 1)
        else:
            _in_flight.discard(key)
        RUNS_IN_FLIGHT.set(len(_in_flight) + _in_flight_anonymous)


def _on_step_completed(f: Mapping[str, Any]) -> None:
    workflow, step = f.get("workflow"), f.get("step")
    _steps(workflow, step, "completed").inc()
    duration = _number(f.get("duration_s"))
    if duration is not None:
        _step_duration(workflow, step).observe(duration)


def _on_step_failed(f: Mapping[str, Any]) -> None:
    workflow, step = f.get("workflow"), f.get("step")
    _steps(workflow, step, "failed").inc()
    duration = _number(f.get("duration_s"))
    if duration is not None:
        _step_duration(workflow, step).observe(duration)


def _on_step_retried(f: Mapping[str, Any]) -> None:
    _step_retries(f.get("workflow"), f.get("step")).inc()


def _child_finished(outcome: str) -> Callable[[Mapping[str, Any]], None]:
    def handle(f: Mapping[str, Any]) -> None:
        _children_finished(f.get("workflow"), outcome).inc()
        latency = _number(f.get("wake_latency_s"))
        if latency is not None:
            _wake_latency(f.get("parent_workflow")).observe(latency)

    return handle


def _on_claim_batch(f: Mapping[str, Any]) -> None:
    count = _number(f.get("count"))
    if count is None:
        return
    if count > 0:
        _claims(f.get("source")).inc(count)
    CLAIM_BATCH_SIZE.observe(count)


def _on_lease_lost(f: Mapping[str, Any]) -> None:
    _lease_lost(f.get("workflow")).inc()


def _on_heartbeat(f: Mapping[str, Any]) -> None:
    HEARTBEATS.inc()
    leases = _number(f.get("leases"))
    if leases is not None:
        HEARTBEAT_LEASES.observe(leases)


def _on_wake_notification(f: Mapping[str, Any]) -> None:
    WAKE_NOTIFICATIONS.inc()


def _on_wake_poll(f: Mapping[str, Any]) -> None:
    WAKE_POLLS.inc()


def _on_cascade_completed(f: Mapping[str, Any]) -> None:
    cancelled = _number(f.get("cancelled"))
    if cancelled:
        CASCADE_CANCELLED.inc(cancelled)


def _on_cascade_truncated(f: Mapping[str, Any]) -> None:
    CASCADE_TRUNCATED.inc()


_DISPATCH: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "run.started": _on_run_started,
    "run.completed": _run_finished("completed"),
    "run.failed": _run_finished("failed"),
    "run.cancelled": _run_finished("cancelled"),
    "run.continued": _run_finished("continued"),
    "run.resumed": _on_run_resumed,
    "run.suspended": _on_run_suspended,
    "execution.started": _on_execution_started,
    "execution.ended": _on_execution_ended,
    "step.completed": _on_step_completed,
    "step.retried": _on_step_retried,
    "step.failed": _on_step_failed,
    "child.completed": _child_finished("completed"),
    "child.failed": _child_finished("failed"),
    "child.cancelled": _child_finished("cancelled"),
    "claim.batch": _on_claim_batch,
    "lease.lost": _on_lease_lost,
    "heartbeat": _on_heartbeat,
    "wake.notification": _on_wake_notification,
    "wake.poll": _on_wake_poll,
    "cascade.completed": _on_cascade_completed,
    "cascade.truncated": _on_cascade_truncated,
}

_warned_events: set[str] = set()


def _handler(event: hooks.HookEvent) -> None:
    """The one hook handler behind every event metric. Never raises."""
    try:
        handle = _DISPATCH.get(event.name)
        if handle is None:
            return
        fields = event.fields if isinstance(event.fields, Mapping) else {}
        handle(fields)
    except Exception:
        name = getattr(event, "name", "?")
        if name not in _warned_events:  # once per event name: metrics must not flood logs
            _warned_events.add(name)
            log.warning("metrics could not record hook event %s; ignored", name, exc_info=True)


_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Attach the metrics hook handler (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            hooks.on("*", _handler)
            _installed = True


def uninstall() -> None:
    """Detach the metrics hook handler (idempotent). Metric values are kept; the in-flight
    gauge is reset, since executions ending while detached would not be seen."""
    global _installed, _in_flight_anonymous
    with _install_lock:
        hooks.off("*", _handler)
        _installed = False
        with _in_flight_lock:
            _in_flight.clear()
            _in_flight_anonymous = 0
            RUNS_IN_FLIGHT.set(0)


def installed() -> bool:
    """Whether the metrics hook handler is attached."""
    return _installed


# --- label sets shown at 0 --------------------------------------------------------------

RUN_OUTCOMES = ("completed", "failed", "cancelled", "continued")
CHILD_OUTCOMES = ("completed", "failed", "cancelled")
END_REASONS = ("terminal", "continued", "cancelled", "finished", "stale", "lease_lost", "evicted",
               "shutdown", "database", "nondeterminism", "error")
WAKE_SOURCES = ("start", "notify", "poll", "local")


def _declare_fixed() -> None:
    for reason in END_REASONS:
        _executions_ended(reason)
    for source in WAKE_SOURCES:
        _run_resumes(source)
    for source in ("poll", "notify", "local"):
        _claims(source)


_declare_fixed()


def declare_workflows(workflows: Iterable[tuple[str, str]]) -> None:
    """Create the per-workflow series (at 0) of every ``(workflow, queue)`` given, so a
    dashboard lists every registered workflow and its panels show 0 before the first event.
    Called by ``Engine.open()`` with the workflows registered in the process; idempotent.
    Counters only: a histogram at 0 would add a series per bucket and plot nothing anyway."""
    for workflow, queue in workflows:
        _runs_started(workflow, queue)
        _runs_requested(workflow, queue)
        for outcome in RUN_OUTCOMES:
            _runs_finished(workflow, queue, outcome)
        for outcome in CHILD_OUTCOMES:
            _children_finished(workflow, outcome)
        _children_started(workflow)
        _lease_lost(workflow)
        _run_suspensions(workflow)


def register_queue_collector(dsn: str, schema: str,
                             registry: CollectorRegistry = REGISTRY) -> QueueCollector:
    """Create a :class:`QueueCollector` for ``schema`` and register it with ``registry``."""
    collector = QueueCollector(dsn, schema)
    registry.register(collector)
    return collector


def unregister_queue_collector(collector: QueueCollector,
                               registry: CollectorRegistry = REGISTRY) -> None:
    """Unregister ``collector`` (no error if it was not registered) and close its connection."""
    try:
        registry.unregister(collector)
    except KeyError:
        pass
    collector.close()


# --- exposition ----------------------------------------------------------------------------


def metrics_text(registry: CollectorRegistry = SERVED_REGISTRY) -> bytes:
    """The registry in the Prometheus text format (for mounting on an existing server);
    by default what ``/metrics`` serves (durable's metrics plus the process collectors)."""
    return generate_latest(registry)


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = SERVED_REGISTRY,
                         extra_routes: dict[str, Callable[[], tuple[int, str]]] | None = None,
                         ) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``extra_routes`` maps paths (e.g. ``"/healthz"``) to callables returning
    ``(status_code, body)``. ``port=0`` binds a free port (see the returned ``.port``).
    Raises :class:`~durable.errors.ConfigurationError` when the address cannot be bound.
    """
    return serve(host, port, registry, extra_routes)
