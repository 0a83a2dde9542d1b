"""durable: Postgres-native durable workflows for Python.

Workflows are ordinary ``async`` functions; every step result, child start and outcome,
timer and signal is journaled in PostgreSQL, so a run survives any process dying and
resumes where it was.
"""

from .config import EngineSettings
from .engine import Engine
from .errors import (ApplicationError, CancellationRequested, ChildCancelledError, ChildDepthError,
                     ChildFailedError, ConfigurationError, ContentionError, DatabaseUnavailableError, DurableError,
                     FailureInfo, HistoryLimitError, NonDeterminismError, PatchError, PayloadError,
                     RegistrationError, ReplayError, RunCancelledError,
                     RunConflictError, RunFailedError, RunFinishedError, RunNotFoundError, RunTimeoutError,
                     SchemaVersionError, SearchAttributeError, SignalTimeoutError, StepCallError, StepError, StepTimeoutError,
                     WorkflowNotFoundError, WorkflowTimeoutError)
from .errors import ForkPositionError, RunNotResumableError  # re-driving runs
from .handle import RunHandle, RunInfo
from .observe import hooks, metrics
from .retry import RetryPolicy
from .runtime.branches import BranchError
from .runtime.cancel import CancelResult
from .runtime.children import ChildRef, ParentClosePolicy
from .runtime.context import Context
from .runtime.registry import StepDef, WorkflowDef, step, workflow
from .store.rows import RegisteredWorkflow, RunPage, RunSummary, WorkerInfo
from .errors import ScheduleConflictError, ScheduleError, ScheduleNotFoundError  # schedules (issue 15)

__version__ = "0.1.0"

__all__ = [
    "Engine", "EngineSettings", "Context", "ChildRef", "ParentClosePolicy", "RunHandle", "RunInfo", "CancelResult",
    "RetryPolicy", "WorkflowDef", "StepDef", "workflow", "step", "hooks", "metrics",
    "DurableError", "ApplicationError", "BranchError", "CancellationRequested", "ContentionError",
    "ChildCancelledError", "ChildDepthError", "ChildFailedError", "ConfigurationError", "DatabaseUnavailableError",
    "HistoryLimitError", "NonDeterminismError", "PayloadError", "RegistrationError", "RunCancelledError",
    "PatchError", "ReplayError",
    "RunConflictError", "RunFailedError", "RunFinishedError", "RunNotFoundError", "RunTimeoutError",
    "SchemaVersionError", "SignalTimeoutError", "StepCallError", "StepError", "StepTimeoutError",
    "WorkflowNotFoundError", "WorkflowTimeoutError",
    "WorkerInfo", "RegisteredWorkflow", "RunPage", "RunSummary", "SearchAttributeError", "ForkPositionError", "RunNotResumableError",
    "FailureInfo",  # issue 14: structured failures (the cause chain)
    "ScheduleConflictError", "ScheduleError", "ScheduleNotFoundError",
]
