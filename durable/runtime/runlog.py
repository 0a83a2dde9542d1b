"""Per-run log lines, from one logger (``durable.runs``), with structured fields.

A run's outcome in this process is exactly one line: failed, timed out and lease lost at
WARNING; retried (its retry policy re-runs it) and cancelled at INFO. Claimed, resumed and
suspended are DEBUG lines. Every line carries ``run_id``, ``workflow`` and ``event`` as
``extra`` fields (outcomes also ``attempt``, ``reason`` and, for failures,
``error_type``: the application's own error type at the root of the cause chain), so a
JSON formatter (``durable-dispatcher --log-format json``) emits them as keys. Lines never
hold inputs, results, payloads or error messages (they may carry user data; ``durable show
RUN`` prints the error).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import MutableMapping
from typing import Any

log = logging.getLogger("durable.runs")


def root_type(error: Any) -> str | None:
    """The innermost error type of an error document (its ``root``, else its own type)."""
    if not isinstance(error, dict):
        return None
    root = error.get("root")
    if isinstance(root, dict) and root.get("type"):
        return str(root["type"])
    kind = error.get("type")
    return str(kind) if kind else None


def outcome(level: int, reason: str, run_id: uuid.UUID, workflow: str | None, attempt: int | None, *,
            error_type: str | None = None, text: str = "", **fields: Any) -> None:
    """The one line of a run's outcome here; ``text`` ends the message (no user data)."""
    if not log.isEnabledFor(level):
        return
    what = {"failed": f"failed with {error_type}", "retried": f"failed with {error_type} and is retried",
            "timed_out": "exceeded its execution timeout", "cancelled": "was cancelled",
            "lease_lost": "lost its lease (another process took it over); stopped executing it here",
            "nondeterminism": "failed: its code no longer matches its history"}.get(reason, reason)
    where = ", ".join(x for x in (workflow, f"attempt {attempt}" if attempt is not None else None) if x)
    message = f"run {run_id} ({where}) {what}" if where else f"run {run_id} {what}"
    if text:
        message += f"; {text}"
    extra = {"event": f"run.{reason}", "run_id": str(run_id), "workflow": workflow, "attempt": attempt,
             "reason": reason, **({"error_type": error_type} if error_type is not None else {}), **fields}
    log.log(level, "%s", message, extra=extra)


def debug(event: str, run_id: uuid.UUID, workflow: str, **fields: Any) -> None:
    """A DEBUG line of a run's progress here (claimed, resumed, suspended)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("run %s (%s) %s", run_id, workflow, event,
                  extra={"event": f"run.{event}", "run_id": str(run_id), "workflow": workflow, **fields})


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.log``: the workflow's logger (``durable.workflow.<name>``) adding ``run_id``
    and ``workflow`` to every line's ``extra`` fields, keeping the caller's own."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def run_logger(run_id: uuid.UUID, workflow: str) -> RunLogger:
    return RunLogger(logging.getLogger(f"durable.workflow.{workflow}"), {"run_id": str(run_id), "workflow": workflow})
