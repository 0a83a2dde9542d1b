"""Durations as people write them, one syntax for every flag and setting that takes one
(the CLI's flags, the dispatcher's flags and environment variables, EngineSettings given
text, retention): plain seconds (``90``, ``0.5``) or numbers with units, combinable:
``500ms``, ``10s``, ``5m``, ``2h``, ``30d``, ``2w``, ``1h30m`` (``1h 30m``)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from .errors import ConfigurationError

__all__ = ["FORMS", "ago", "duration", "parse_duration", "took"]

FORMS = "plain seconds (90, 0.5) or a number with a unit: 500ms, 10s, 5m, 2h, 30d, 2w, or combined: 1h30m"
_MAX_AGE_S = 100 * 365 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PLAIN = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d+)?|\.\d+)(?:ms|s|m|h|d|w)\s*)+")


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds from plain seconds (``90``, ``0.5``) or ``500ms``, ``10s``, ``5m``, ``2h``,
    ``30d``, ``2w``, ``1h30m``; raises ConfigurationError naming ``what`` (the flag or
    setting) and the accepted forms."""
    if isinstance(text, bool):
        raise ConfigurationError(f"{what} must be a duration, got {text!r}: use {FORMS}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        parsed = _parse_units(str(text).strip().lower())
        if parsed is None:
            raise ConfigurationError(f"{what} {text!r} is not a duration: use {FORMS}")
        value = parsed
    if not math.isfinite(value) or value < 0 or value > _MAX_AGE_S:
        raise ConfigurationError(f"{what} must be between 0 seconds and 100 years, got {text!r}")
    return value


def _parse_units(s: str) -> float | None:
    if not s:
        return None
    if _PLAIN.fullmatch(s):
        return float(s)
    if not _WHOLE.fullmatch(s):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(s))


# --- durations as people read them (the CLI's tables, the console's pages) ------------------


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
    """How long a run ran (so far, with …, when it has not finished); ``run`` a row dict
    or an object with started_at / created_at / finished_at."""
    def get(name: str) -> Any:
        return run.get(name) if isinstance(run, dict) else getattr(run, name, None)

    start = get("started_at") or get("created_at")
    if start is None:
        return "-"
    end = get("finished_at")
    secs = ((end or now) - start).total_seconds()
    return duration(secs) if end else duration(secs) + "…"
