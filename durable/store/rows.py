"""Typed rows: what the statements of :mod:`durable.store` return.

Nothing above the store indexes a row tuple: every statement's result comes out as one of
these (dataclasses for the engine's hot paths, TypedDicts for the operator views that are
printed or turned into JSON as they are).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

# An operation's key in the journal: its position (int) in the workflow's main branch, or,
# for an operation of a concurrent branch (a task the workflow created), a string naming
# the branch path and the operation's index in it ("0.1:2"; see durable/runtime/branches.py).
Key = int | str


def split_key(key: Key | None) -> tuple[int | None, str | None]:
    """The (pos, op) columns of a journal key."""
    if isinstance(key, str):
        return None, key
    return key, None


def tree_key_of(run_id: uuid.UUID) -> int:
    """The tree key an id carries: its first 8 bytes as a signed bigint (durable_tree_key in
    SQL). A root run's id is its tree's; every id created in a tree from schema version 7 on
    carries it too (:func:`in_tree`)."""
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


def in_tree(root_id: uuid.UUID, run_id: uuid.UUID) -> uuid.UUID:
    """``run_id`` moved into the tree of ``root_id``: the root's first 8 bytes, then
    ``run_id``'s last 8 (durable_in_tree in SQL), so the id says which tree it is in."""
    return uuid.UUID(bytes=root_id.bytes[:8] + run_id.bytes[8:])


@dataclass(slots=True)
class Event:
    """One journal event of a run."""

    seq: int
    pos: int | None
    kind: str
    name: str | None
    data: dict[str, Any]
    op: str | None = None
    size: int = 0  # its data's size in bytes (JSON text, or as stored), for memory estimates

    @property
    def key(self) -> Key | None:
        return self.op if self.op is not None else self.pos


@dataclass(slots=True)
class Pending:
    """An event journaled at the next durable point; its seq is given when it is written."""

    key: Key | None
    kind: str
    name: str | None
    text: str  # the event's data as JSON text
    on_written: Callable[[int], None] | None = None  # receives the seq once written


@dataclass(frozen=True, slots=True)
class Claim:
    """A run this process now holds the lease of (a claim, or a start already leased)."""

    tree_key: int
    id: uuid.UUID
    root_id: uuid.UUID
    workflow: str
    version: int
    queue: str
    input: Any
    lease_epoch: int                     # the lease epoch this claim holds (fences every write)
    parent_id: uuid.UUID | None = None
    chain_root_id: uuid.UUID | None = None
    attempt: int = 1
    depth: int = 0
    cancel_requested: bool = False
    grafted: bool = True                 # ids of its tree carry the root's prefix (trees made since schema 7)
    prev_status: str = "pending"
    wake_latency_s: float | None = None  # the run was due → claimed (database clock)
    last_seq: int = 0                    # the journal's last seq (0: nothing to replay)
    deadline_in_s: float | None = None   # seconds until its execution timeout

    @property
    def resumed_latency_s(self) -> float | None:
        """Due → claimed, for a suspended run that was woken (None for a first start)."""
        return self.wake_latency_s if self.prev_status == "suspended" else None


@dataclass(frozen=True, slots=True)
class Started:
    """A run inserted by ``engine.start``."""

    id: uuid.UUID
    status: str
    lease_epoch: int | None
    due_in_s: float | None  # seconds until a delayed start is due


@dataclass(frozen=True, slots=True)
class ExistingRun:
    """The run an id or idempotency key already names."""

    id: uuid.UUID
    workflow: str
    input: Any


@dataclass(frozen=True, slots=True)
class DueIn:
    """Why a run could not be claimed: its status and seconds until it is due (negative:
    due already, so another transaction held its row for a moment)."""

    status: str
    due_in_s: float | None


@dataclass(frozen=True, slots=True)
class Suspended:
    due_now: bool   # a wake arrived while it ran: claim it again at once
    db_now: float   # the database clock (epoch seconds)


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """A child whose outcome its parent has not read yet (fan-in)."""

    chain_root_id: uuid.UUID  # the id the parent started (continue-as-new and retries follow it)
    id: uuid.UUID             # the chain's final run
    status: str
    result: Any
    error: Any
    workflow: str
    finished_at: float | None
    seq: int                  # the outcome's number among its parent's (the read cursor)


@dataclass(frozen=True, slots=True)
class ChildOutcomes:
    children: list[ChildOutcome]
    db_now: float


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """The terminal state of a run waited on by chain (cross-run waits)."""

    target: uuid.UUID  # the chain root waited on
    id: uuid.UUID      # the chain's final run (the target itself when it was deleted)
    status: str        # 'completed' | 'failed' | 'cancelled' | 'missing' (deleted by retention)
    result: Any
    error: Any
    workflow: str
    finished_at: float | None
    db_now: float


@dataclass(frozen=True, slots=True)
class ChainState:
    """The newest link of a continue-as-new chain."""

    id: uuid.UUID
    status: str
    result: Any
    error: Any
    workflow: str


@dataclass(frozen=True, slots=True)
class RunTarget:
    """A run another run waits on: its workflow, continue-as-new chain and tree."""

    workflow: str
    chain_root_id: uuid.UUID
    tree_key: int


@dataclass(frozen=True, slots=True)
class TakenChildId:
    id: uuid.UUID
    workflow: str
    parent_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class ConsumedSignal:
    leased: bool  # False: the lease was lost (nothing written)
    payload: Any
    id: int


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    cancelled: int
    truncated: int
    status_before: str
    live_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Expired:
    expired: int
    next_deadline_in_s: float | None  # seconds until the earliest deadline left (None: none)
    runs: tuple["TimedOut", ...] = ()  # the expired runs it could name (for their log lines)


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A run the timeout sweep failed with WorkflowTimeoutError."""

    id: uuid.UUID
    workflow: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RunLabels:
    id: uuid.UUID
    workflow: str
    queue: str


@dataclass(frozen=True, slots=True)
class QueueDepth:
    queue: str
    ready: int
    oldest_ready_s: float | None
    waiting: int


@dataclass(frozen=True)
class RunInfo:
    """A run's row as stored (status, input, result or error, lease, timing)."""

    id: uuid.UUID
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    chain_root_id: uuid.UUID
    continued_to: uuid.UUID | None
    workflow: str
    version: int
    queue: str
    status: str
    input: Any
    result: Any
    error: Any
    attempt: int
    depth: int
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: datetime | None
    next_wakeup_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class GcBatch:
    """One retention batch: the keyset cursor to continue from and what it did."""

    after_ts: datetime | None
    after_id: uuid.UUID | None
    scanned: int
    kept: int          # trees in the window kept (a run in them not finished long enough, or awaited)
    runs: int
    events: int
    signals: int


# --- operator views (printed or dumped as JSON as they are) ---------------------------


class RunDetail(TypedDict):
    id: uuid.UUID
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    chain_root_id: uuid.UUID
    continued_to: uuid.UUID | None
    workflow: str
    version: int
    queue: str
    status: str
    input: Any
    result: Any
    error: Any
    attempt: int
    depth: int
    parent_close_policy: str
    idempotency_key: str | None
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: datetime | None
    next_wakeup_at: datetime | None
    deadline_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    origin_id: uuid.UUID | None          # restart/fork: the run this one was made from
    origin_kind: str | None
    origin_at: int | None
    db_now: datetime
    event_count: int
    pending_signals: int
    children: dict[str, int]
    child_key: str | None
    attributes: dict[str, Any] | None


class EventDetail(TypedDict):
    seq: int
    pos: int | None
    op: str | None
    kind: str
    name: str | None
    data: Any
    created_at: datetime


class TreeRow(TypedDict):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    child_key: str | None
    continued_to: uuid.UUID | None
    lvl: int
    workflow: str
    status: str
    queue: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: Any
    db_now: datetime


class TreeShapeRow(TypedDict):
    """One run of a tree's shape (the web console's run page), ids as text."""

    id: str
    parent_id: str | None
    continued_to: str | None
    workflow: str
    status: str
    child_key: str | None


class TreeBriefRow(TypedDict):
    """Queue, times and root cause ({type, message}) of a run shown in a tree."""

    id: str
    queue: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None


class PendingSignalRow(TypedDict):
    """A signal sent to a run and not received yet (the web console's run page)."""

    id: int
    name: str
    payload: str | None  # its JSON text, cut to 500 characters
    delivery_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class RunFilter:
    """Which runs ``durable runs`` lists (every field optional; all given must hold)."""

    statuses: tuple[str, ...] = ()
    workflow: str | None = None         # a name, or a glob with * (e.g. 'orders.*')
    queue: str | None = None
    parent_id: uuid.UUID | None = None
    root_id: uuid.UUID | None = None
    top_level: bool = False
    older_than_s: float | None = None   # created more than this many seconds ago
    newer_than_s: float | None = None   # created at most this many seconds ago
    before: tuple[datetime, uuid.UUID] | None = None  # keyset cursor (created_at, id)
    # --- listing and searching runs (issue 14) ---
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None
    attributes: dict[str, Any] | None = None  # all must hold (see durable/attributes.py)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run in a list (``engine.list_runs``)."""

    id: uuid.UUID
    workflow: str
    version: int
    queue: str
    status: str
    parent_id: uuid.UUID | None
    root_id: uuid.UUID
    child_key: str | None          # the key= its parent gave it (children only)
    attributes: dict[str, Any]     # its search attributes ({} when none)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_type: str | None           # the root cause's type (the innermost link of its error's chain)
    error_message: str | None = None  # the root cause's message, cut to 200 characters
    attempt: int = 1                  # its attempt (a child retried by its retry policy: 2, 3, ...)


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of runs, newest first; pass ``next_cursor`` as ``cursor=`` for the next one
    (None: this was the last page)."""

    runs: list[RunSummary]
    next_cursor: str | None
    db_now: datetime               # the database clock when the page was read


# --- the workflow registry and the process list (issue 14: start by name, `durable workers`) ---


@dataclass(frozen=True, slots=True)
class RegisteredWorkflow:
    """A workflow as the processes executing it registered it (``durable_workflows``): what a
    pure client needs to start it by name."""

    name: str
    version: int
    queue: str
    takes_input: bool
    input_schema: dict[str, Any] | None  # JSON schema of the input (None: not checked)
    result_schema: dict[str, Any] | None
    execution_timeout_s: float | None
    registered_by: str = ""  # the owner (host:pid:nonce) of the process that wrote the row
    updated_at: datetime | None = None

    def same_definition(self, other: "RegisteredWorkflow") -> bool:
        """Equal but for who wrote it and when (an unchanged definition is not written again)."""
        return (self.name, self.version, self.queue, self.takes_input, self.input_schema, self.result_schema,
                self.execution_timeout_s) == (other.name, other.version, other.queue, other.takes_input,
                                              other.input_schema, other.result_schema, other.execution_timeout_s)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process that executes runs (its heartbeat row in ``durable_workers``)."""

    owner: str
    host: str
    pid: int
    queues: list[str]
    workflows: list[str]  # "name:version" of every workflow it registered
    concurrency: int
    started_at: datetime
    last_seen: datetime  # its last heartbeat (every lease_ttl/3 seconds while alive)
    expires_at: datetime  # its leases expire then unless it beats again
    alive: bool  # expires_at is still ahead (a process that stopped cleanly expires at once)


# --- re-driving runs (durable/store/redrive.py) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resumed:
    """A run resumed: its live link, the status it had, the history it superseded (events
    ``superseded_from`` .. ``marker_seq - 1``), the failed links of the children re-run."""

    run_id: uuid.UUID
    tree_key: int
    workflow: str
    queue: str
    previous_status: str
    superseded_from: int
    superseded: int
    rerun: list[uuid.UUID]
    marker_seq: int


@dataclass(frozen=True, slots=True)
class Forked:
    """A run made from another (restart: no history; fork: ``copied`` of its first events)."""

    run_id: uuid.UUID
    tree_key: int
    workflow: str
    queue: str
    copied: int
    history_length: int


@dataclass(frozen=True, slots=True)
class RedriveCandidate:
    """A top-level run a bulk resume/restart would take."""

    id: uuid.UUID
    workflow: str
    status: str
    created_at: datetime
    error: Any


# --- a run's history as a document (issue 15: durable export, durable.testing.Replayer) -------


@dataclass(frozen=True, slots=True)
class HistoryRun:
    """The row of a run whose history is exported or replayed."""

    id: uuid.UUID
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    workflow: str
    version: int
    status: str
    input: Any
    attempt: int
    grafted: bool


# --- schedules (issue 15; durable/store/schedules.py) ---------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A schedule's row (``engine.schedules.list()``, ``describe()``)."""

    id: str
    workflow: str
    version: int
    queue: str
    input: Any
    cron: str | None
    every_s: float | None
    timezone: str
    overlap: str
    catchup_window_s: float
    paused: bool
    declared: bool
    next_fire_at: datetime
    due_at: datetime | None
    buffered_at: datetime | None
    last_fire_at: datetime | None
    last_run_id: uuid.UUID | None
    last_run_key: int | None
    fired: int
    skipped: int
    missed: int
    note: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """A run a schedule started (``tick`` None: started by ``trigger``) and its status."""

    run_id: uuid.UUID
    tick: datetime | None
    status: str
    created_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunToStart:
    """One run a schedule starts (through durable_start_run, as engine.start does)."""

    id: uuid.UUID
    workflow: str
    version: int
    queue: str
    input: Any  # the JSON value (as read from the schedule's row)
    timeout: float | None


@dataclass(frozen=True, slots=True)
class ScheduleAdvance:
    """What one firing round writes back to a schedule's row."""

    id: str
    next_fire_at: datetime
    due_at: datetime
    buffered_at: datetime | None
    last_fire_at: datetime | None
    last_run_id: uuid.UUID | None
    fired: int
    skipped: int
    missed: int
# --- the web console's live updates (issue 16: durable/ui/live.py) --------------------------


@dataclass(frozen=True, slots=True)
class LiveRun:
    """What the console's live hub compares between two looks at a run: its status and the
    number of its last history event (a step journaled changes ``last_seq``)."""

    id: uuid.UUID
    tree_key: int
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    status: str
    created_at: datetime
    last_seq: int
