"""In-process hooks: the one extension point for tracing, metrics and logging.

Attach a handler with ``durable.hooks.on(name, fn)`` (``name`` is an exact event name,
``"*"``, or a prefix such as ``"child.*"``), or as a decorator ``@durable.hooks.on("run.*")``;
detach it with the function ``on`` returned, or ``durable.hooks.off(name, fn)``. Handlers
are called synchronously on the event loop thread, in the order they were attached, with
one :class:`HookEvent` (``event.name``, ``event["field"]``, ``event.get("field")``). Keep
them fast: they run inline with the engine. A handler that raises is logged and ignored: it
never changes a run's outcome, and later handlers still run. The built-in Prometheus
metrics are themselves a handler (see ``durable.metrics``; attached by ``Engine.open()``
unless ``metrics=False``), and so is the OpenTelemetry tracing (``durable.observe.tracing``;
attached when ``otel_tracing`` is on).

Events and their fields (``*_run_id`` fields are UUIDs; durations are seconds):

=====================  ==============================================================
``run.started``        run_id, workflow, queue, parent_run_id (None for a top-level run).
                       A run was created: ``engine.start``, a child start, a schedule's
                       tick, trigger or backfill (in the process that fired it), or the
                       successor of a continue-as-new or of a retried run.
``run.completed``      run_id, workflow, queue, duration_s
``run.failed``         run_id, workflow, queue, duration_s, error_type, root_error_type
                       (the outermost type, e.g. StepError, and the application's own
                       type at the root of the cause chain, e.g. Declined)
``run.cancelled``      run_id, workflow, queue, reason, [duration_s]. Emitted for the run
                       a hard ``cancel()`` targeted (its cancelled descendants are counted
                       by ``cascade.completed``), and by a run that finished its cleanup
                       after a graceful cancel (with duration_s).
``run.continued``      run_id, workflow, queue, successor_run_id, duration_s, [reason],
                       [error_type]. reason='retry' (with the error_type) when a failed
                       run's retry policy re-runs it as the successor.
``run.resumed``        run_id, workflow, source ('start'|'notify'|'poll'|'local'),
                       wake_latency_s (a suspended run: its wake-up due time → resumed;
                       None for a first start)
``run.suspended``      run_id, workflow
``run.redriven``       run_id, workflow, action ('resume'|'restart'|'fork'), origin_run_id,
                       [previous_status], [rerun_children] (both for a resume). An operator re-drove a
                       run (``engine.resume`` / ``restart`` / ``fork``); restart and fork
                       also emit ``run.started`` for the new run.
``execution.started``  run_id, workflow, queue, attempt, parent_run_id, first (this process
                       began executing a run; ``first`` is True when the run begins for the
                       first time: nothing journaled yet, never suspended)
``execution.ended``    run_id, workflow, reason ('terminal'|'continued'|'cancelled'|'finished'|
                       'stale'|'lease_lost'|'evicted'|'shutdown'|'database'|
                       'nondeterminism'|'error'). 'cancelled': the run was cancelled while
                       executing or parked here; 'finished': it ended elsewhere while parked
                       (its execution timeout), not by a cancel
``step.completed``     run_id, workflow, step, attempt, duration_s
``step.retried``       run_id, workflow, step, attempt, error_type, delay_s
``step.failed``        run_id, workflow, step, attempt, duration_s, error_type
``child.started``      parent_run_id, child_run_id, workflow (the child's), parent_workflow
``child.completed``    parent_run_id, child_run_id, workflow, parent_workflow, wake_latency_s
``child.failed``       parent_run_id, child_run_id, workflow, parent_workflow, wake_latency_s,
                       error_type
``child.cancelled``    parent_run_id, child_run_id, workflow, parent_workflow, wake_latency_s
``claim.batch``        count, source ('poll': fallback poll; 'notify': the claimer woken
                       early by a notification or freed capacity, or one notified run;
                       'local': one run claimed after its local timer or wake)
``lease.lost``         run_id, workflow   (taken over after lease expiry, or a fenced write
                       found the lease gone; a cancel seen by the heartbeat is not one)
``heartbeat``          leases, lost
``wake.notification``  channel
``wake.poll``          count
``cascade.completed``  run_id, cancelled (runs cancelled, the target included)
``cascade.truncated``  run_id, depth_limit, truncated (descendants left below the limit)
``gc.completed``       runs, events, signals, batches, duration_s (one background
                       retention round; see durable.retention)
=====================  ==============================================================

``child.*`` outcome events are emitted once per outcome the parent journals (wakes
coalesce, outcomes do not); ``wake_latency_s`` is the database clock at that moment
minus the child's terminal commit time (None if unknown). ``child_run_id`` is the id the
parent started; after continue-as-new the outcome is the chain's final run's.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigurationError

log = logging.getLogger("durable.hooks")


@dataclass(frozen=True, slots=True)
class HookEvent:
    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


Handler = Callable[[HookEvent], Any]

_handlers: list[tuple[str, Handler]] = []


def on(name: str, handler: Handler | None = None) -> Any:
    """Attach ``handler`` to events named ``name`` (exact, ``"prefix.*"`` or ``"*"``).

    Usable as ``on("child.started", fn)`` (returns a function that detaches it) or as
    a decorator ``@on("child.*")`` (returns ``fn``; detach with ``off("child.*", fn)``).
    Handlers are plain functions: an ``async def`` handler is refused, since nothing
    would await it (hand the event to a queue or task from a sync handler instead).
    """
    if not isinstance(name, str) or not name or (
            "*" in name and name != "*" and not (name.endswith(".*") and "*" not in name[:-2] and len(name) > 2)):
        raise ConfigurationError(
            f"hook name must be an event name ('child.started'), a prefix pattern ending in '.*' "
            f"('child.*') or '*', got {name!r}")

    def attach(fn: Handler) -> Handler:
        if not callable(fn):
            raise ConfigurationError(f"hook handler for {name!r} must be callable, got {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
            raise ConfigurationError(
                f"hook handler {fn!r} for {name!r} is async; hooks are called synchronously, so use a "
                "plain function (it may put the event on an asyncio.Queue or start a task)")
        _handlers.append((name, fn))
        return fn

    if handler is None:
        return attach
    attach(handler)

    def detach() -> None:
        off(name, handler)

    return detach


def off(name: str, handler: Handler) -> None:
    """Detach a handler attached with :func:`on` (no error if it was not attached)."""
    try:
        _handlers.remove((name, handler))
    except ValueError:
        pass


def listening(name: str) -> bool:
    """Whether any attached handler would receive an event called ``name`` (lets callers
    skip work done only to fill an event's fields)."""
    return any(_matches(pattern, name) for pattern, _ in tuple(_handlers))


def _matches(pattern: str, name: str) -> bool:
    if pattern == "*" or pattern == name:
        return True
    return pattern.endswith(".*") and name.startswith(pattern[:-1])


def emit(name: str, **fields: Any) -> None:
    """Deliver one event to every matching handler; handler errors are logged, never raised."""
    if not _handlers:
        return
    event = HookEvent(name, fields)
    for pattern, fn in tuple(_handlers):
        if _matches(pattern, name):
            try:
                fn(event)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # a broken hook (even one raising CancelledError) never breaks a run
                log.exception("hook handler %r for %s raised; ignored", fn, name)
