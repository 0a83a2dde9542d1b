"""durable: Postgres-native durable workflows for Python.

Workflows are ordinary ``async`` functions; every step result, child start and outcome,
timer and signal is journaled in PostgreSQL, so a run survives any process dying and
resumes where it was.
"""

from .observe import hooks
from .runtime.branches import BranchError
from .config import EngineSettings
from .runtime.context import ChildRef, Context, ParentClosePolicy
from .engine import Engine
from .errors import ApplicationError, CancellationRequested, ChildCancelledError, ChildDepthError, ChildFailedError, ConfigurationError, ContentionError, DatabaseUnavailableError, DurableError, HistoryLimitError, LeaseLostError, NonDeterminismError, PayloadError, RegistrationError, RunCancelledError, RunConflictError, RunFailedError, RunNotFoundError, RunTimeoutError, SchemaVersionError, SignalTimeoutError, StepCallError, StepError, StepTimeoutError, WorkflowNotFoundError, WorkflowTimeoutError
from .handle import RunHandle, RunInfo
from .runtime.lifecycle import RunFinishedError
from .runtime.registry import step, workflow
from .retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "Engine", "EngineSettings", "Context", "ChildRef", "ParentClosePolicy", "RunHandle", "RunInfo",
    "RetryPolicy", "workflow", "step", "hooks",
    "DurableError", "ApplicationError", "BranchError", "CancellationRequested", "ContentionError", "ChildCancelledError", "ChildDepthError",
    "ChildFailedError", "ConfigurationError", "DatabaseUnavailableError", "HistoryLimitError",
    "LeaseLostError", "NonDeterminismError", "PayloadError", "RegistrationError", "RunCancelledError",
    "RunConflictError", "RunFailedError", "RunFinishedError", "RunNotFoundError", "RunTimeoutError",
    "SchemaVersionError", "SignalTimeoutError", "StepCallError", "StepError", "StepTimeoutError", "WorkflowNotFoundError",
    "WorkflowTimeoutError",
]
