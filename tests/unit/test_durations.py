"""Durations as retention and the CLI take them ("30s", "1h30m", "7d", plain seconds):
parsed exactly; bad input is a ConfigurationError."""

from __future__ import annotations

import pytest

from durable.errors import ConfigurationError
from durable.store.retention import parse_duration


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800),
                                          ("2w", 1209600), ("1h30m", 5400), ("90", 90), ("0.5", 0.5), (" 7D ", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "7 days", "3x", "h", "-5m", "1e400", "1..5s", "5m3"])
def test_bad_durations(text):
    with pytest.raises(ConfigurationError, match="duration|between"):
        parse_duration(text, "--older-than")
