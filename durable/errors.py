"""Typed errors users can catch. Every message says what went wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator


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


# --- structured failures: the cause chain of a journaled error document ----------------


@dataclass(frozen=True)
class FailureInfo:
    """One link of a failure's cause chain, read from a journaled error document.

    A run that failed because a step raised ``ApplicationError("card refused",
    type="Declined")`` in its child has the chain ``ChildFailedError`` (the run) →
    ``StepError`` (the child, with its ``run_id`` and ``workflow``) → ``Declined`` (the
    application's error). ``type`` is the application's own type name (``KeyError``, or
    ``ApplicationError``'s ``type=``); ``cause`` the next link inward (None at the root);
    ``run_id``/``workflow`` are set on links that are a run's own failure, ``step`` on a
    step's failure."""

    type: str
    message: str = ""
    non_retryable: bool = False
    details: Any = None
    cause: "FailureInfo | None" = None
    run_id: str | None = None
    workflow: str | None = None
    step: str | None = None

    @classmethod
    def from_doc(cls, doc: Any) -> "FailureInfo | None":
        """The chain of an error document (None when there is none)."""
        if not isinstance(doc, dict):
            return None
        return cls(type=str(doc.get("type") or "Error"), message=str(doc.get("message") or doc.get("reason") or ""),
                   non_retryable=bool(doc.get("non_retryable", False)), details=doc.get("details"),
                   cause=cls.from_doc(doc.get("cause")), run_id=doc.get("run_id"), workflow=doc.get("workflow"),
                   step=doc.get("step"))

    def chain(self) -> Iterator["FailureInfo"]:
        """This link, then each cause inward to the root."""
        link: FailureInfo | None = self
        while link is not None:
            yield link
            link = link.cause

    @property
    def root(self) -> "FailureInfo":
        """The innermost link: the application's own error."""
        *_, last = self.chain()
        return last

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


class _Caused:
    """``cause``/``root``/``root_type`` of an error that carries a journaled error document."""

    cause: FailureInfo | None

    @property
    def root(self) -> FailureInfo | None:
        """The innermost link of the cause chain (the application's own error)."""
        return self.cause.root if self.cause is not None else None

    @property
    def root_type(self) -> str | None:
        """The application's own error type at the root of the chain, e.g. ``"Declined"``
        or ``"KeyError"`` (``.type`` is the outermost link's, e.g. ``"StepError"``)."""
        root = self.root
        return root.type if root is not None else None

    @property
    def root_message(self) -> str:
        root = self.root
        return root.message if root is not None else ""


class RunFailedError(_Caused, DurableError):
    """The awaited run ended as failed. ``error`` holds the journaled error document;
    ``cause`` the same as a :class:`FailureInfo` chain (the run's own failure first);
    ``root_type`` / ``root_message`` its innermost link (the application's error);
    ``type`` / ``message`` the outermost link (e.g. ``StepError``), as before."""

    def __init__(self, run_id: Any, error: dict[str, Any] | None, workflow: str | None = None) -> None:
        err = error or {}
        self.run_id = run_id
        self.workflow = workflow
        self.error = err
        self.type = err.get("type")
        self.message = err.get("message", "")
        self.cause = FailureInfo.from_doc(err) if err else None
        text = f"run {run_id} failed: {self.type}: {self.message}"
        root = self.root
        if root is not None and root is not self.cause and str(root) not in text:
            text += f" (root cause {root})"
        super().__init__(text)


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
            f"{expected}, but the code now does {found}. {_nondeterminism_fix(expected)}"
        )


def _nondeterminism_fix(expected: str) -> str:
    if expected.startswith("patch "):  # a ctx.patched marker the code no longer asks for
        change = expected[len("patch "):]
        return (f"That marker was journaled by ctx.patched({change}): keep that call (or replace it with "
                f"ctx.deprecate_patch({change})) until every run that recorded it has finished.")
    return ("The workflow's code changed under a running run: guard the change with "
            "`if ctx.patched(\"change-id\"):` new code `else:` old code (runs recorded before the change replay "
            "the old path, new runs take the new one), or register the changed code as a new version "
            "(@durable.workflow(name, version=N+1), keeping the old version registered until its runs finish); "
            "durable.testing.Replayer checks a change against stored histories before a deploy. Or cancel "
            "the affected runs.")


class PatchError(DurableError):
    """``ctx.patched`` / ``ctx.deprecate_patch`` was called with a change id that is not a
    non-empty string, or with one change id at two places of one run's execution."""


class ReplayError(DurableError):
    """``durable.testing.Replayer`` cannot replay a history: its workflow (or that version)
    is not among the Replayer's workflows, or the history document is malformed."""


class StepError(_Caused, DurableError):
    """A step failed after its retries. Raised the same way live and on replay, so
    workflow code that catches it behaves deterministically. ``error`` is the step's
    journaled error document; ``cause`` / ``root_type`` the application's error in it."""

    def __init__(self, step: str, error: dict[str, Any], attempts: int) -> None:
        self.step = step
        self.error = error
        self.type = error.get("type")
        self.message = error.get("message", "")
        self.attempts = attempts
        self.cause = FailureInfo.from_doc(error)
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
    """A child run failed. Carries the child's run id and journaled error; ``cause`` is
    the child's failure chain and ``root_type`` the application's error type at its root
    (a grandchild's, a step's), the same live and on replay."""


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


# --- the web console (issue 16) ------------------------------------------------------------


class ConsoleBindError(ConfigurationError):
    """``durable ui`` / ``durable-dispatcher --ui`` refused an address: not ``[HOST:]PORT``,
    or a bind beyond loopback without an access token (``host`` says which). Nothing started."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host
