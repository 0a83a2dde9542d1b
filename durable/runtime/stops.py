"""How a workflow coroutine is unwound without that being its outcome.

A :class:`Stop` (a BaseException, so workflow code's ``except Exception`` never swallows
it) unwinds an execution that must stop here: the lease was lost, the database is gone,
the process shuts down, the coroutine was evicted from memory, or another process advanced
the run while it was parked. The run itself is untouched: it resumes from its journal.
:class:`ContinueAsNew` ends the run by handing over to a successor run.
"""

from __future__ import annotations

from typing import Any

from ..store.rows import Claim
from .registry import WorkflowDef


class Stop(BaseException):
    """Unwinds a workflow coroutine that must stop executing here (not a failure)."""

    reason = "stop"


class LeaseLost(Stop):
    reason = "lease_lost"


class Cancelled(Stop):
    """The run was cancelled (from outside, or by a cascade) while executing or parked here."""

    reason = "cancelled"


class Finished(Stop):
    """The run ended elsewhere while parked here (its execution timeout, say), not by a cancel."""

    reason = "finished"


class Evicted(Stop):
    reason = "evicted"


class Shutdown(Stop):
    reason = "shutdown"


class DatabaseLost(Stop):
    """The database became unreachable mid-execution. The run is not failed: this
    execution stops, the lease expires (or is given back), and the run resumes from its
    journal."""

    reason = "database"


class Stale(Stop):
    """Another process advanced the run while it was parked here: replay from the journal."""

    reason = "stale"

    def __init__(self, claim: Claim) -> None:
        super().__init__()
        self.claim = claim


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new()``: the run ends as `continued` and a successor
    run (fresh history) takes over with ``input_json``."""

    def __init__(self, input_json: str, workflow: WorkflowDef[Any, Any]) -> None:
        super().__init__()
        self.input_json = input_json
        self.workflow = workflow
