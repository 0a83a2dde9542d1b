"""The console's human formats (Jinja2 filters): durations, times, payloads, errors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .timeline import error_line


def duration(seconds: float | None) -> str:
    """850ms, 1.2s, 3m04s, 2h05m, 3d04h."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    delta = (now - ts).total_seconds()
    return f"in {duration(-delta)}" if delta < 0 else f"{duration(delta)} ago"


def took(run: Any, now: datetime) -> str:
    """How long a run ran (so far, with …, when it has not finished)."""
    def get(name: str) -> Any:
        return run.get(name) if isinstance(run, dict) else getattr(run, name, None)

    start = get("started_at") or get("created_at")
    if start is None:
        return "-"
    end = get("finished_at")
    secs = ((end or now) - start).total_seconds()
    return duration(secs) if end else duration(secs) + "…"


def stamp(ts: datetime | None) -> str:
    return "-" if ts is None else ts.isoformat(sep=" ", timespec="seconds")


def pretty(value: Any) -> str:
    """A payload as indented JSON (escaped by the template)."""
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def short_id(value: Any) -> str:
    """The start and end of a run id (the runs of one tree share their first 16 hex digits)."""
    text = str(value)
    return f"{text[:8]}…{text[-6:]}" if len(text) == 36 else text


def chain(node: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """A tree node and its continue-as-new successors: (node, is a successor)."""
    out: list[tuple[dict[str, Any], bool]] = []
    n: dict[str, Any] | None = node
    while n is not None:
        out.append((n, bool(out)))
        n = n.get("continued_as")
    return out


FILTERS = {"chain": chain, "duration": duration, "pretty": pretty, "short_id": short_id, "error_line": error_line,
           "stamp": stamp}
