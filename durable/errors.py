"""Typed errors users can catch. Every message says what went wrong and what to do."""

from __future__ import annotations

from typing import Any


class DurableError(Exception):
    """Base class of every error this library raises on purpose."""


# --- configuration and database -------------------------------------------------------


class ConfigurationError(DurableError):
    """A setting, DSN or argument is invalid."""


class DatabaseUnavailableError(DurableError):
    """The database could not be reached within the connect timeout."""


class ContentionError(DurableError):
    """A statement kept losing to concurrent transactions (deadlock or serialization
    failure) after the engine retried it; nothing of it was written. Retry the call."""


class SchemaVersionError(DurableError):
    """The database schema is newer than this code knows, or not migrated."""


# --- registration and payloads --------------------------------------------------------


class WorkflowNotFoundError(DurableError):
    """No workflow is registered under the requested name in this process."""


class RegistrationError(DurableError):
    """A workflow or step was registered inconsistently."""


class PayloadError(DurableError):
    """An input, result, signal payload or error is not JSON-serialisable, fails its
    pydantic model, or exceeds the size limit. Nothing was written."""


# --- runs -----------------------------------------------------------------------------


class RunNotFoundError(DurableError):
    def __init__(self, run_id: Any) -> None:
        super().__init__(
            f"run {run_id} does not exist in this database/schema; "
            "check the id (durable runs lists runs) and the DSN/schema you connected to"
        )
        self.run_id = run_id


class RunConflictError(DurableError):
    """A run id or idempotency key is already taken by a run of another workflow or input."""


class RunFailedError(DurableError):
    """The awaited run ended as failed. `error` holds the journaled error document."""

    def __init__(self, run_id: Any, error: dict[str, Any] | None, workflow: str | None = None) -> None:
        err = error or {}
        self.run_id = run_id
        self.workflow = workflow
        self.error = err
        self.type = err.get("type")
        self.message = err.get("message", "")
        super().__init__(f"run {run_id} failed: {self.type}: {self.message}")


class RunFinishedError(DurableError):
    """The run already finished; signals go to running runs only."""


class RunCancelledError(DurableError):
    """The awaited run was cancelled. `reason` is e.g. 'cancelled' or 'parent_cancelled'."""

    def __init__(self, run_id: Any, reason: str | None = None) -> None:
        self.run_id = run_id
        self.reason = reason or "cancelled"
        super().__init__(f"run {run_id} was cancelled ({self.reason})")


class RunTimeoutError(DurableError, TimeoutError):
    """Waiting for a run's result took longer than the caller's timeout (the run goes on)."""


# --- workflow-side --------------------------------------------------------------------


class NonDeterminismError(DurableError):
    """The workflow code no longer matches the run's journaled history."""

    def __init__(self, run_id: Any, position: int | str, expected: str, found: str) -> None:
        self.run_id = run_id
        self.position = position
        self.expected = expected
        self.found = found
        super().__init__(
            f"non-determinism in run {run_id} at operation {position}: the history has "
            f"{expected}, but the code now does {found}. Deploy code compatible with "
            "running runs (register a new workflow version for changed logic) or cancel them."
        )


class StepError(DurableError):
    """A step failed after its retries. Raised the same way live and on replay, so
    workflow code that catches it behaves deterministically."""

    def __init__(self, step: str, error: dict[str, Any], attempts: int) -> None:
        self.step = step
        self.error = error
        self.type = error.get("type")
        self.message = error.get("message", "")
        self.attempts = attempts
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {self.type}: {self.message}")


class StepCallError(DurableError):
    """A step function was called directly inside a workflow: that would run it without
    journaling (again on every replay, without its retry policy)."""

    def __init__(self, step: str, function: str) -> None:
        self.step = step
        super().__init__(
            f"step {step!r} was called directly inside a workflow, which would not journal it: "
            f"write `await ctx.step({function}, ...)` (a direct call runs the plain function "
            "only outside workflows, e.g. in unit tests or inside another step)")


class ChildFailedError(RunFailedError):
    """A child run failed. Carries the child's run id and journaled error."""


class ChildCancelledError(RunCancelledError):
    """A child run was cancelled."""


class CancellationRequested(DurableError):
    """Raised inside a workflow at its next durable operation or wait after a graceful
    cancel request (``engine.cancel(run, graceful=True)`` or the REQUEST_CANCEL
    parent-close policy). The workflow may catch it and run compensation steps; the run
    then ends as ``cancelled``."""


class SignalTimeoutError(DurableError, TimeoutError):
    """wait_signal reached its timeout before a signal arrived."""


class WorkflowTimeoutError(DurableError, TimeoutError):
    """The run exceeded its execution timeout."""


class StepTimeoutError(DurableError, TimeoutError):
    """A step attempt exceeded its timeout."""


class HistoryLimitError(DurableError):
    """The run's history reached the configured event limit; use ctx.continue_as_new."""


class ChildDepthError(DurableError):
    """Starting a child deeper than max_child_depth."""


class ApplicationError(DurableError):
    """Raise from a step or workflow to fail with a chosen type and message; with
    non_retryable=True the step is not retried whatever its policy says."""

    def __init__(self, message: str, *, type: str | None = None, non_retryable: bool = False,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or "ApplicationError"
        self.non_retryable = non_retryable
        self.details = details


# --- schedules (issue 15) -------------------------------------------------------------


class ScheduleError(ConfigurationError):
    """A schedule's definition is invalid: a malformed cron expression (the message names
    the field and its position), an unknown time zone, both or neither of cron/every, an
    unknown overlap policy. Nothing was written."""


class ScheduleNotFoundError(DurableError):
    """No schedule has this id (in this database/schema)."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r} in this database/schema; "
                         "list them with `durable schedules list` (or engine.schedules.list())")
        self.schedule_id = schedule_id


class ScheduleConflictError(DurableError):
    """A schedule id is already used by a schedule of another workflow. Nothing was written."""
