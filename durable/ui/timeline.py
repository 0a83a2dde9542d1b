"""A run's history as a timeline for the run page: one item per operation (a step with its
retries, a child with its status, a timer, a signal, ...), placed by time since the run was
created. Pure: from the events of ``store/inspect.py:show_events`` and the statuses of the
run's children."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..failures import root_line

GROUP_OVER = 20  # children started one after another shown one by one up to this many (as in the tree)
_FAILED = ("step_failed", "child_failed", "child_cancelled", "cancel_observed", "signal_timeout")


@dataclass
class Item:
    """One row of the timeline."""

    kind: str                       # step, child, timer, signal, continue, resumed, event
    label: str
    first_seq: int
    pos: int | None
    start_s: float                  # seconds since the run was created
    end_s: float
    state: str = ""                 # completed, failed, retrying, a child's status, ...
    detail: str = ""
    attempts: int = 0
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, run id)
    superseded: bool = False
    events: list[str] = field(default_factory=list)  # the events it stands for: "seq kind"


def compact(value: Any, width: int = 120) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def error_line(error: Any) -> str:
    """``Type: message`` of an error document's root cause, else the value as JSON."""
    if not isinstance(error, dict):
        return "" if error is None else compact(error)
    return root_line(error)


def superseded_ranges(events: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """The seq ranges a resume superseded (kept, but replay skips them)."""
    return [(int(e["data"].get("superseded_from") or e["seq"]), int(e["seq"])) for e in events
            if e["kind"] == "resumed" and isinstance(e["data"], dict)]


def _ids(data: Any) -> list[str]:
    """The run ids an event names (a child it started, a run it waited on)."""
    if not isinstance(data, dict):
        return []
    out: list[str] = []
    for key in ("child_id", "run_id", "child_run_id"):
        v = data.get(key)
        if isinstance(v, str) and _is_uuid(v) and v not in out:
            out.append(v)
    for key in ("child_ids", "ids", "children"):
        vs = data.get(key)
        if isinstance(vs, list):
            out += [v for v in vs if isinstance(v, str) and _is_uuid(v) and v not in out]
    return out


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _is_uuid(text: str) -> bool:
    return _UUID.match(text) is not None


def build(events: Sequence[Mapping[str, Any]], created_at: datetime, kids: Mapping[str, tuple[str, str | None]],
          continued_to: uuid.UUID | None = None, end_at: datetime | None = None,
          outcome: tuple[str, str] | None = None) -> tuple[list[Item], float]:
    """The timeline's items and its length in seconds (the last event, or ``end_at``).
    ``kids``: the status (of its chain's last run) and child key of each run in the tree,
    by id. More than GROUP_OVER children started one after another are one item.
    ``outcome``: a finished run's (status, result or error line), its last item."""
    cut = superseded_ranges(events)
    items: list[Item] = []
    steps: dict[tuple[int | None, str | None, bool], Item] = {}
    children: dict[str, Item] = {}
    last = 0.0
    for e in events:
        at = max(0.0, (e["created_at"] - created_at).total_seconds())
        last = max(last, at)
        kind, name, data, seq = e["kind"], e["name"], e["data"], int(e["seq"])
        d = data if isinstance(data, dict) else {}
        gone = any(lo <= seq < hi for lo, hi in cut)
        tag = f"{seq} {kind}"
        if kind in ("step_completed", "step_retry", "step_failed"):
            k = (e["pos"], name, gone)
            it = steps.get(k)
            if it is None or it.state in ("completed", "failed"):
                it = Item("step", f"step {name}", seq, e["pos"], at, at, superseded=gone)
                steps[k] = it
                items.append(it)
            it.end_s = at
            it.attempts = max(it.attempts, int(d.get("attempt") or 1))
            it.events.append(tag)
            if kind == "step_completed":
                it.state, it.detail = "completed", "→ " + compact(d.get("result"))
            elif kind == "step_failed":
                it.state, it.detail = "failed", error_line(d.get("error"))
            else:
                it.state, it.detail = "retrying", f"attempt {d.get('attempt', '?')}: {error_line(d.get('error'))}"
            continue
        ids = _ids(d)
        if kind.startswith("child_") and ids and ids[0] in children and kind != "child_started":
            it = children[ids[0]]
            it.end_s = at
            it.events.append(tag)
            if d.get("status") or kind in ("child_completed", "child_failed", "child_cancelled"):
                it.detail = (error_line(d.get("error")) if kind != "child_completed"
                             else "→ " + compact(d.get("result")))
            continue
        if kind in ("child_started", "children"):
            for cid in ids or [""]:
                label = "child " + (str(d.get("workflow") or name or ""))
                state, key = kids.get(cid, ("", None))
                it = Item("child", label + (f" [{key}]" if key else ""), seq, e["pos"], at, at,
                          state=state, links=[(cid, cid)] if cid else [], superseded=gone, events=[tag])
                if cid:
                    children[cid] = it
                items.append(it)
            continue
        it = Item("event", kind.replace("_", " ") + (f" {name}" if name else ""), seq, e["pos"], at, at,
                  superseded=gone, events=[tag], links=[(i, i) for i in ids])
        if kind == "timer_started":
            secs = d.get("seconds")
            it.kind, it.label = "timer", f"sleep {secs}s" if secs is not None else "sleep"
            if isinstance(secs, (int, float)):
                it.end_s = at + float(secs)
        elif kind in ("signal_received", "signal_timeout", "signal_wait"):
            it.kind = "signal"
            it.detail = compact(d.get("payload")) if kind == "signal_received" else ""
        elif kind == "resumed":
            it.kind = "resumed"
            lo, n = int(d.get("superseded_from") or 0), int(d.get("superseded") or 0)
            it.detail = (f"events {lo}..{lo + n - 1} superseded" if n else "nothing superseded") + \
                        f"; was {d.get('previous_status')}: {error_line(d.get('previous_error'))}"
        elif kind == "run_outcome":
            it.detail = f"{d.get('status')}: " + (error_line(d.get("error")) if d.get("error")
                                                  else compact(d.get("result")))
        elif kind in _FAILED:
            it.state = "failed"
            it.detail = error_line(d.get("error")) or compact(d)
        else:
            it.detail = compact(d) if d else ""
        items.append(it)
    if end_at is not None:
        last = max(last, (end_at - created_at).total_seconds())
    if outcome is not None:
        items.append(Item("outcome", "run finished", 10**9, None, last, last, state=outcome[0], detail=outcome[1]))
    if continued_to is not None:
        items.append(Item("continue", "continued as new", 10**9, None, last, last, state="continued",
                          links=[(str(continued_to), str(continued_to))]))
    for it in items:
        last = max(last, it.end_s)
    return _fan_outs(items), last


def _fan_outs(items: list[Item]) -> list[Item]:
    """Runs of more than GROUP_OVER child items of one workflow, one after another, as one
    item with counts by status (the tree below lists them, grouped by key)."""
    out: list[Item] = []
    i = 0
    while i < len(items):
        j = i
        head = items[i]
        workflow = head.label.split(" [")[0]
        while j < len(items) and items[j].kind == "child" and items[j].label.split(" [")[0] == workflow \
                and items[j].superseded == head.superseded:
            j += 1
        if head.kind != "child" or j - i <= GROUP_OVER:
            out.append(head)
            i += 1
            continue
        run = items[i:j]
        counts = Counter(it.state or "unknown" for it in run)
        out.append(Item("children", f"{len(run)} × {workflow}", head.first_seq, head.pos,
                        min(it.start_s for it in run), max(it.end_s for it in run),
                        state=counts.most_common(1)[0][0] if len(counts) == 1 else "",
                        detail=", ".join(f"{n} {s}" for s, n in counts.most_common()),
                        superseded=head.superseded, events=[f"{run[0].first_seq}..{run[-1].first_seq} child_started"]))
        i = j
    return out
