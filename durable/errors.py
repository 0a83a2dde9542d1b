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


# --- run id prefixes (the CLI) ----------------------------------------------------------


class AmbiguousRunIdError(DurableError):
    """A run id prefix matches more than one run; give more characters of the id. The ids
    of one tree share their first 16 hex digits (the tree's key), so a child needs more."""

    def __init__(self, prefix: str, matches: list[Any]) -> None:
        shown = ", ".join(str(m) for m in matches[:5]) + (", …" if len(matches) > 5 else "")
        super().__init__(
            f"run id prefix {prefix!r} matches {'more than 5' if len(matches) > 5 else len(matches)} runs "
            f"({shown}); give more characters of the id (the runs of a tree share its first 16 hex digits: a "
            "run with children, or a child, needs 17 or more, or its full id)"
        )
        self.prefix = prefix
        self.matches = matches


# --- search attributes (issue 14: listing and searching runs) ---------------------------


class SearchAttributeError(DurableError):
    """A search attribute is not a scalar (str, int, float, bool) or a list of scalars, its
    key is not a plain name, or a filter names a key no run has ever set. Nothing was
    written."""


# --- re-driving runs (resume / restart / fork) ---------------------------------------------


class RunNotResumableError(DurableError):
    """``resume`` refused: the run is not failed, cancelled or timed out (``status`` says what
    it is), or it is a child run (``root_id`` names the tree's root to resume instead).
    Nothing was written."""

    def __init__(self, message: str, *, run_id: Any, status: str | None = None, root_id: Any = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.root_id = root_id


class ForkPositionError(DurableError):
    """``fork(at=N)`` past the end of the run's history (``history_length`` events), or
    negative. Nothing was written."""

    def __init__(self, message: str, *, run_id: Any, at: int, history_length: int | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.at = at
        self.history_length = history_length
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
