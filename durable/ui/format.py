"""The console's human formats (Jinja2 filters): durations, times, payloads, errors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..durations import ago, duration, took
from .timeline import error_line


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
