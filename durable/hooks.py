"""In-process hooks: the one extension point for tracing, metrics and logging.

Attach a handler with ``durable.hooks.on(name, fn)`` (``name`` may be ``"*"`` or a
prefix such as ``"child.*"``). Handlers are called synchronously, in the order they
were attached, with one :class:`HookEvent`. A handler that raises is logged and
ignored: it never changes a run's outcome. The built-in Prometheus metrics are
themselves a handler (see ``durable.metrics``).

Events and their fields:

=====================  ==============================================================
``run.started``        run_id, workflow, queue, parent_run_id
``run.completed``      run_id, workflow, queue, duration_s
``run.failed``         run_id, workflow, queue, duration_s, error_type
``run.cancelled``      run_id, workflow, queue, reason
``run.continued``      run_id, workflow, queue, successor_run_id
``run.resumed``        run_id, workflow, source ('start'|'notify'|'poll'|'local'),
                       wake_latency_s (child/signal/timer due → resumed, or None)
``run.suspended``      run_id, workflow
``execution.started``  run_id, workflow   (this process began executing a run)
``execution.ended``    run_id, workflow, reason ('terminal'|'suspended'|'lease_lost'|'evicted'|'shutdown')
``step.completed``     run_id, workflow, step, attempt, duration_s
``step.retried``       run_id, workflow, step, attempt, error_type, delay_s
``step.failed``        run_id, workflow, step, attempt, duration_s, error_type
``child.started``      parent_run_id, child_run_id, workflow, parent_workflow
``child.completed``    parent_run_id, child_run_id, workflow
``child.failed``       parent_run_id, child_run_id, workflow, error_type
``child.cancelled``    parent_run_id, child_run_id, workflow
``claim.batch``        count, source ('poll'|'notify'|'wake')
``lease.lost``         run_id, workflow
``heartbeat``          leases, lost
``wake.notification``  channel
``wake.poll``          count
``cascade.completed``  run_id, cancelled
``cascade.truncated``  run_id, depth_limit, truncated
=====================  ==============================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

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
    a decorator ``@on("child.*")``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("hook name must be a non-empty string such as 'child.started' or 'child.*'")

    def attach(fn: Handler) -> Handler:
        if not callable(fn):
            raise TypeError(f"hook handler for {name!r} must be callable, got {fn!r}")
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
            except Exception:  # a broken hook must never break a run
                log.exception("hook handler %r for %s raised; ignored", fn, name)
