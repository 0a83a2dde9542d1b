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


# --- one syntax for every duration flag and setting (issue 14) ------------------------------------


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("1h 30m", 5400), ("1.5h", 5400), ("1m30s", 90),
                                          ("90.", 90)])
def test_more_forms(text, seconds):
    assert parse_duration(text) == seconds


def test_every_dispatcher_duration_takes_every_form():
    """Each duration flag of durable-dispatcher (and its environment variable, and the
    EngineSettings field given text) takes plain seconds and each unit form alike."""
    from durable.config import DURATION, EngineSettings
    from durable.dispatcher.settings import OPTIONS, DispatcherSettings, load_settings

    durations = [o for o in OPTIONS if DURATION in DispatcherSettings.model_fields[o.field].metadata]
    assert {o.flags[-1] for o in durations} >= {"--grace", "--retention", "--lease-ttl", "--poll-interval"}
    for form, seconds in (("90", 90), ("10s", 10), ("1m30s", 90), ("1.5m", 90)):
        for o in durations:
            s = load_settings(["-m", "os", o.flags[-1], form], environ={})
            assert getattr(s, o.field) == seconds, (o.flags, form)
            s = load_settings(["-m", "os"], environ={o.env: form})
            assert getattr(s, o.field) == seconds, (o.env, form)
            if o.engine:
                assert getattr(EngineSettings(**{o.field: form}), o.field) == seconds
    assert load_settings(["-m", "os", "--retention", "30d"], environ={}).retention_s == 30 * 86400
    with pytest.raises(ConfigurationError, match=r"--grace / DURABLE_SHUTDOWN_GRACE: .*'10x' is not a duration: "
                                                 r"use plain seconds .* 10s, 5m, 2h, 30d, .*1h30m"):
        load_settings(["-m", "os", "--grace", "10x"], environ={})
