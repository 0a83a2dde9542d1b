"""What the engine's LISTEN connection hears, routed to whom it concerns.

Payloads on the schema's wake channel: ``<run>|<sticky owner>`` (a waiting run was woken:
a child finished, a signal arrived, a cancel request), ``new|<queue>`` (runs to claim),
``done|<run>`` (a run someone here watches finished), ``cancel|<owner>`` (runs held by
that process were cancelled) or ``cancel|<run>`` (a graceful cancel request),
``schedules|`` (schedules changed: the schedule loop re-reads its next due time).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from .results import ResultWaits
from .runs import RunTable

log = logging.getLogger(__name__)


class Notifications:
    def __init__(self, runs: RunTable, results: ResultWaits, *, kick_claimer: Callable[[], None],
                 kick_scheduler: Callable[[], None] | None = None) -> None:
        self.runs = runs
        self.results = results
        self.kick_claimer = kick_claimer
        self.kick_scheduler = kick_scheduler

    def connected(self) -> None:
        """After (re)connecting the listener: claim what is due and re-check result waits
        (anything may have happened while nothing listened)."""
        self.kick_claimer()
        self.results.wake_all()
        if self.kick_scheduler is not None:
            self.kick_scheduler()

    def dispatch(self, payload: str) -> None:
        head, _, tail = payload.partition("|")
        if head == "new":
            if tail in self.runs.settings.queues:
                self.kick_claimer()
        elif head == "schedules":
            if self.kick_scheduler is not None:
                self.kick_scheduler()
        elif head == "done":
            try:
                self.results.wake(uuid.UUID(tail))
            except ValueError:
                pass
        elif head == "cancel":
            if tail == self.runs.owner:
                self.runs.check_cancelled()
                return
            try:
                self.runs.on_cancel_request(uuid.UUID(tail))
            except ValueError:
                pass
        else:
            try:
                run_id = uuid.UUID(head)
            except ValueError:
                log.debug("ignoring notification %r", payload)
                return
            self.runs.on_wake(run_id, tail)
