"""A run renewed by a successor in its chain: continue-as-new, and a child's retry attempt.

Both are one transaction in the database (``durable_continue``, and ``durable_finish``
for a failure its retry policy re-runs): the run becomes ``continued`` and its successor,
with a deterministic id, takes over its place in the tree. Waiters follow the chain (they
are registered on its first run, the chain root).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid

from ..observe import hooks
from ..store import lifecycle as store_lifecycle
from ..store.rows import in_tree
from . import runlog
from .host import RunView
from .stops import ContinueAsNew

log = logging.getLogger(__name__)


def continue_as_new_id(run_id: uuid.UUID, grafted: bool = True) -> uuid.UUID:
    """The run id of a run's continue-as-new successor (in the run's tree)."""
    new = uuid.uuid5(run_id, "continue-as-new")
    return in_tree(run_id, new) if grafted else new


def retry_run_id(run_id: uuid.UUID, grafted: bool = True) -> uuid.UUID:
    """The run id of the next attempt of a failed run (durable_derived_id in SQL), in the
    run's tree."""
    h = bytearray(hashlib.md5(f"{run_id}|retry".encode()).digest())
    h[6] = (h[6] & 0x0F) | 0x30
    h[8] = (h[8] & 0x0F) | 0x80
    new = uuid.UUID(bytes=bytes(h))
    return in_tree(run_id, new) if grafted else new


async def continue_as_new(ex: RunView, can: ContinueAsNew) -> None:
    """End the run as ``continued`` and start its successor with ``can``'s input."""
    token = ex.journal.token
    if token is None:
        return
    new_id = continue_as_new_id(ex.run_id, ex.grafted)
    async with ex.journal.conn() as conn:
        ok = await store_lifecycle.continue_as_new(conn, ex.tree_key, ex.run_id, token, new_id, can.workflow.name,
                                                   can.workflow.version, can.input_json)
    ex.journal.token = None
    if not ok:
        hooks.emit("lease.lost", run_id=ex.run_id, workflow=ex.wf.name)
        return
    hooks.emit("run.continued", run_id=ex.run_id, workflow=ex.wf.name, queue=ex.queue,
               successor_run_id=new_id, duration_s=time.monotonic() - ex.started_mono)
    hooks.emit("run.started", run_id=new_id, workflow=can.workflow.name, queue=ex.queue,
               parent_run_id=ex.parent_id)
    ex.host.outcome_changed(ex.run_id)
    ex.host.claim_soon(ex.tree_key, new_id, ex.queue)


def attempt_retried(ex: RunView, error: str | None) -> None:
    """The run failed and its retry policy re-runs it as a new attempt (durable_finish
    made this run 'continued' and inserted the successor, due after the retry delay)."""
    successor = retry_run_id(ex.run_id, ex.grafted)
    err = json.loads(error or "{}")
    runlog.outcome(logging.INFO, "retried", ex.run_id, ex.wf.name, ex.attempt, error_type=runlog.root_type(err),
                   text=f"its retry policy re-runs it as run {successor}", successor_run_id=str(successor))
    hooks.emit("run.continued", run_id=ex.run_id, workflow=ex.wf.name, queue=ex.queue,
               successor_run_id=successor, duration_s=time.monotonic() - ex.started_mono,
               reason="retry", error_type=err.get("type"))
    hooks.emit("run.started", run_id=successor, workflow=ex.wf.name, queue=ex.queue, parent_run_id=ex.parent_id)
    ex.host.outcome_changed(ex.run_id)  # outside waiters re-read and follow the chain
    # the successor is due after its backoff: claim it then, not at the next poll
    ex.host.claim_soon(ex.tree_key, successor, ex.queue)
