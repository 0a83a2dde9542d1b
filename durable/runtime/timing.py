"""Durations given to durable operations (sleeps, timeouts), checked before anything is
written."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigurationError

MAX_SECONDS = 10 * 365 * 86400.0


def seconds(value: Any, what: str) -> float:
    """A number of seconds between 0 and 10 years."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > MAX_SECONDS:
        raise ConfigurationError(f"{what} must be between 0 and {MAX_SECONDS:.0f} seconds (10 years), got {value!r}")
    return float(value)


def positive(value: Any, what: str) -> float:
    """A timeout: like :func:`seconds`, but 0 (expired before it starts) is refused too."""
    s = seconds(value, what)
    if s <= 0:
        raise ConfigurationError(f"{what} must be more than 0 seconds, got {value!r}; leave it unset for no timeout")
    return s
