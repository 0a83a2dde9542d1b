"""Durations as people write them (``30s``, ``15m``, ``12h``, ``7d``, ``1h30m``), for every
flag and setting that takes one (the CLI, the dispatcher, retention)."""

from __future__ import annotations

import math

from .errors import ConfigurationError

__all__ = ["parse_duration"]

_MAX_AGE_S = 100 * 365 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds from ``30s``, ``15m``, ``12h``, ``7d``, ``2w``, ``1h30m`` or plain seconds
    (``90``, ``0.5``); raises ConfigurationError naming the accepted forms."""
    if isinstance(text, bool):
        raise ConfigurationError(f"{what} must be a duration such as 30s, 15m, 12h or 7d, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        parsed = _parse_units(str(text).strip().lower())
        if parsed is None:
            raise ConfigurationError(
                f"{what} {text!r} is not a duration: use a number with a unit, e.g. 30s, 15m, 12h, 7d "
                "or 1h30m (s, m, h, d, w), or plain seconds such as 90")
        value = parsed
    if not math.isfinite(value) or value < 0 or value > _MAX_AGE_S:
        raise ConfigurationError(f"{what} must be between 0 seconds and 100 years, got {text!r}")
    return value


def _parse_units(s: str) -> float | None:
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    total, num, seen = 0.0, "", False
    for ch in s:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in _UNITS and num:
            try:
                total += float(num) * _UNITS[ch]
            except ValueError:
                return None
            num, seen = "", True
        else:
            return None
    return total if seen and not num else None


