"""OpenTelemetry tracing for durable, fed by the in-process hook bus (``pip install 'durable[otel]'``).

Off unless ``opentelemetry-api`` is installed *and* tracing is enabled: ``Engine(otel_tracing=True)``,
``DURABLE_OTEL_TRACING=1`` (engines and the dispatcher), ``durable-dispatcher --otel-tracing``, or
:func:`install` directly. Spans go to the tracer provider the application configured
(``opentelemetry.trace.set_tracer_provider``; the SDK and its exporters are the
application's choice); without one they are no-ops.

Spans (all with ``durable.run_id``, ``durable.workflow`` and, where known, ``durable.attempt``):

* ``durable.run <workflow>`` — one per execution of a run in this process (from the
  claim to its end, parked time included), ``durable.queue``, ``durable.parent_run_id``,
  ``durable.first`` (the run's first execution), ``durable.end_reason``; status ERROR when
  the run failed (``durable.error_type``). While the run executes it is the current span,
  so spans the workflow's own code opens are its children.
* ``durable.step <step>`` — one per step attempt (its measured duration, ended when the
  engine reports it), ``durable.step``; status ERROR for a failed or retried attempt.
* ``durable.child.start <workflow>`` — one per child started, ``durable.child_run_id``,
  ``durable.parent_workflow``.

Handlers never raise (see :mod:`durable.observe.hooks`), and nothing is recorded for
events of runs that began executing before :func:`install`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from ..errors import ConfigurationError
from . import hooks
from .exported import durable_version

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode

    AVAILABLE = True
except ImportError:  # the [otel] extra is not installed: tracing stays off
    AVAILABLE = False

__all__ = ["AVAILABLE", "install", "uninstall", "installed"]

log = logging.getLogger("durable.tracing")

_lock = threading.Lock()
_installed = False
_tracer: Any = None
# run_id -> (the execution's span, the context token attached in the execution's task, attempt)
_runs: dict[Any, tuple[Any, Any, Any]] = {}


def _ns_ago(seconds: Any) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e9:
        return None
    return time.time_ns() - int(seconds * 1e9)


def _attrs(f: Mapping[str, Any], *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = f.get(name)
        if value is None:
            continue
        out[f"durable.{name}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _parent(run_id: Any) -> Any:
    held = _runs.get(run_id)
    return trace.set_span_in_context(held[0]) if held is not None else None


def _on_execution_started(f: Mapping[str, Any]) -> None:
    run_id = f.get("run_id")
    span = _tracer.start_span(f"durable.run {f.get('workflow')}", kind=trace.SpanKind.INTERNAL,
                              attributes=_attrs(f, "run_id", "workflow", "queue", "attempt", "parent_run_id",
                                                "first"))
    # the execution's task: what the workflow code runs in copies this context
    token = otel_context.attach(trace.set_span_in_context(span))
    old = _runs.pop(run_id, None)
    _runs[run_id] = (span, token, f.get("attempt"))
    if old is not None:  # an execution that never reported its end (should not happen)
        old[0].end()


def _on_run_failed(f: Mapping[str, Any]) -> None:
    held = _runs.get(f.get("run_id"))
    if held is None:
        return
    span: Span = held[0]
    error_type = f.get("error_type")
    span.set_attribute("durable.error_type", str(error_type))
    span.set_status(Status(StatusCode.ERROR, f"run failed: {error_type}"))


def _on_execution_ended(f: Mapping[str, Any]) -> None:
    held = _runs.pop(f.get("run_id"), None)
    if held is None:
        return
    span, token, _ = held
    reason = f.get("reason")
    span.set_attribute("durable.end_reason", str(reason))
    if reason in ("nondeterminism", "error", "database"):
        span.set_status(Status(StatusCode.ERROR, f"execution ended: {reason}"))
    try:
        otel_context.detach(token)
    except Exception:  # ended from another context (a shutdown): the task's context dies with it
        pass
    span.end()


def _on_step(f: Mapping[str, Any], error: bool) -> None:
    run_id = f.get("run_id")
    attrs = _attrs(f, "run_id", "workflow", "step", "attempt")
    span = _tracer.start_span(f"durable.step {f.get('step')}", context=_parent(run_id), attributes=attrs,
                              start_time=_ns_ago(f.get("duration_s")))
    if error:
        error_type = f.get("error_type")
        span.set_attribute("durable.error_type", str(error_type))
        span.set_status(Status(StatusCode.ERROR, f"step attempt failed: {error_type}"))
    span.end()


def _on_child_started(f: Mapping[str, Any]) -> None:
    parent = f.get("parent_run_id")
    held = _runs.get(parent)
    attrs = _attrs(f, "child_run_id", "workflow", "parent_workflow")
    attrs["durable.run_id"] = str(parent)
    if held is not None and isinstance(held[2], int):
        attrs["durable.attempt"] = held[2]
    span = _tracer.start_span(f"durable.child.start {f.get('workflow')}", context=_parent(parent), attributes=attrs)
    span.end()


def _handler(event: hooks.HookEvent) -> None:
    name = event.name
    f = event.fields
    try:
        if name == "execution.started":
            _on_execution_started(f)
        elif name == "execution.ended":
            _on_execution_ended(f)
        elif name == "run.failed":
            _on_run_failed(f)
        elif name == "step.completed":
            _on_step(f, error=False)
        elif name in ("step.failed", "step.retried"):
            _on_step(f, error=True)
        elif name == "child.started":
            _on_child_started(f)
    except Exception:
        log.debug("tracing could not record hook event %s; ignored", name, exc_info=True)


def install(tracer_provider: Any = None) -> None:
    """Record spans from this process's hook events (idempotent; ``Engine.open()`` calls it
    when ``otel_tracing`` is on, and ``Engine.close()`` leaves it attached, like the metrics).
    ``tracer_provider``: the provider to use (kept by later calls without one); default the
    global one. Raises
    :class:`~durable.errors.ConfigurationError` when opentelemetry-api is not installed."""
    global _installed, _tracer
    if not AVAILABLE:
        raise ConfigurationError(
            "OpenTelemetry tracing was enabled but opentelemetry-api is not installed; "
            "pip install 'durable[otel]', or turn tracing off (otel_tracing=False, unset DURABLE_OTEL_TRACING)")
    with _lock:
        if tracer_provider is not None or _tracer is None:  # a provider given once is kept
            _tracer = trace.get_tracer("durable", durable_version(), tracer_provider=tracer_provider)
        if not _installed:
            hooks.on("*", _handler)
            _installed = True


def uninstall() -> None:
    """Stop recording spans (idempotent); spans of executions still open are ended, and the
    tracer is forgotten (the next :func:`install` takes the provider anew)."""
    global _installed, _tracer
    with _lock:
        _tracer = None
        hooks.off("*", _handler)
        _installed = False
        for span, _token, _attempt in list(_runs.values()):
            span.end()
        _runs.clear()


def installed() -> bool:
    """Whether the tracing hook handler is attached."""
    return _installed
