"""A run's history as a versioned JSON document: what ``durable export RUN > run.json``
writes and :class:`durable.testing.Replayer` replays (from such a file or read from the
database). The document::

    {"format": "durable.history", "format_version": 1,
     "run_id": "...", "root_id": "...", "parent_id": null, "grafted": true,
     "workflow": "orders.charge", "version": 1, "status": "suspended", "attempt": 1,
     "input": {...},
     "events": [{"seq": 1, "pos": 0, "op": null, "kind": "step_completed", "name": "charge",
                 "data": {...}}, ...]}
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ReplayError, RunNotFoundError
from ..store import history as store_history
from ..store.connections import Conn
from ..store.rows import Event

FORMAT = "durable.history"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunHistory:
    """One run's journal and what it started from."""

    run_id: uuid.UUID
    workflow: str
    version: int
    input: Any
    events: list[Event] = field(default_factory=list)
    root_id: uuid.UUID | None = None       # its tree's root (child ids derive from it); None: the run itself
    parent_id: uuid.UUID | None = None
    grafted: bool = True                   # its tree's ids carry the root's prefix (trees made since schema 7)
    status: str | None = None
    attempt: int = 1

    def to_doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "run_id": str(self.run_id), "root_id": str(self.root_id or self.run_id),
            "parent_id": str(self.parent_id) if self.parent_id else None, "grafted": self.grafted,
            "workflow": self.workflow, "version": self.version, "status": self.status, "attempt": self.attempt,
            "input": self.input,
            "events": [{"seq": e.seq, "pos": e.pos, "op": e.op, "kind": e.kind, "name": e.name, "data": e.data}
                       for e in self.events],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_doc(), indent=indent)

    @classmethod
    def from_doc(cls, doc: Any, *, source: str = "the history document") -> "RunHistory":
        """Parse a document written by :meth:`to_doc` (``durable export``); ReplayError
        naming the field when it is not one."""
        def bad(problem: str) -> ReplayError:
            return ReplayError(f"{source} is not a durable run history: {problem}. Export one with "
                               "`durable export RUN_ID > run.json` or read it with Replayer.history_from_db(...)")

        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise bad(f"its \"format\" must be {FORMAT!r}")
        if doc.get("format_version") != FORMAT_VERSION:
            raise bad(f"format_version {doc.get('format_version')!r} is not one this version of durable reads "
                      f"({FORMAT_VERSION})")
        try:
            run_id = uuid.UUID(str(doc["run_id"]))
            root_id = uuid.UUID(str(doc.get("root_id") or run_id))
            parent_id = uuid.UUID(str(doc["parent_id"])) if doc.get("parent_id") else None
        except (KeyError, ValueError):
            raise bad("run_id, root_id and parent_id must be run ids (UUIDs)") from None
        workflow, version = doc.get("workflow"), doc.get("version")
        if not isinstance(workflow, str) or not workflow:
            raise bad("\"workflow\" must be the workflow's name")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise bad("\"version\" must be a positive int")
        raw = doc.get("events")
        if not isinstance(raw, list):
            raise bad("\"events\" must be a list")
        events: list[Event] = []
        for i, e in enumerate(raw):
            try:
                seq, pos, op = e["seq"], e.get("pos"), e.get("op")
                ok = (isinstance(seq, int) and (pos is None or isinstance(pos, int))
                      and (op is None or isinstance(op, str)) and isinstance(e["kind"], str)
                      and (e.get("name") is None or isinstance(e.get("name"), str))
                      and isinstance(e.get("data") or {}, dict))
            except (KeyError, TypeError):
                ok = False
            if not ok:
                raise bad(f"event {i} needs seq (int), pos (int or null), op (text or null), kind, name and data "
                          "(an object)")
            events.append(Event(seq, pos, e["kind"], e.get("name"), e.get("data") or {}, op,
                                len(json.dumps(e.get("data") or {}))))
        return cls(run_id=run_id, workflow=workflow, version=version, input=doc.get("input"), events=events,
                   root_id=root_id, parent_id=parent_id, grafted=bool(doc.get("grafted", True)),
                   status=doc.get("status"), attempt=int(doc.get("attempt") or 1))

    @classmethod
    def from_json(cls, text: str, *, source: str = "the history document") -> "RunHistory":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ReplayError(f"{source} is not JSON ({exc}); export a history with "
                              "`durable export RUN_ID > run.json`") from None
        return cls.from_doc(doc, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunHistory":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ReplayError(f"cannot read the history file {str(path)!r}: {exc.strerror or exc}") from None
        return cls.from_json(text, source=f"the file {str(path)!r}")


async def load(conn: Conn, run_id: uuid.UUID) -> RunHistory:
    """The history of ``run_id`` as stored now (RunNotFoundError when there is no such run)."""
    found = await store_history.history_of(conn, run_id)
    if found is None:
        raise RunNotFoundError(run_id)
    run, events = found
    return RunHistory(run_id=run.id, workflow=run.workflow, version=run.version, input=run.input, events=events,
                      root_id=run.root_id, parent_id=run.parent_id, grafted=run.grafted, status=run.status,
                      attempt=run.attempt)
