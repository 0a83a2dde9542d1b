"""The dispatcher's settings, in-process (no database, no subprocess): a bad flag or
environment value names the setting and exits 2, an unknown flag or no module is a usage
error, flags win over the environment, and JSON log lines carry the exception text.
(The dispatcher as a real process: tests/procs/test_dispatcher_cli.py.)"""

from __future__ import annotations

import json
import os

import pytest

from durable.dispatcher.__main__ import run as dispatcher_run
from durable.dispatcher.settings import load_settings


@pytest.mark.parametrize("argv, env, expected", [
    (["--log-format", "xml"], {}, "--log-format / DURABLE_LOG_FORMAT"),
    (["--concurrency", "0"], {}, "--concurrency / DURABLE_CONCURRENCY"),
    (["--lease-ttl", "soon"], {}, "--lease-ttl / DURABLE_LEASE_TTL"),
    (["--poll-interval", "nan"], {}, "--poll-interval / DURABLE_POLL_INTERVAL"),
    ([], {"DURABLE_METRICS_PORT": "70000"}, "--metrics-port / DURABLE_METRICS_PORT"),
    ([], {"DURABLE_NO_WAIT": "perhaps"}, "--no-wait / DURABLE_NO_WAIT"),
    (["--module", "not a module"], {}, "--module / DURABLE_MODULES"),
    (["--schema", "Bad-Name"], {}, "schema"),
    (["--dsn", "postgresql://u@h:99999/db"], {}, "port"),
])
def test_bad_values_name_the_setting_and_exit_2(argv, env, expected, capsys, monkeypatch):
    for k in [k for k in os.environ if k.startswith("DURABLE_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    base = [] if any(a == "--module" for a in argv) else ["-m", "wf_dispatch"]
    assert dispatcher_run([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "error" in err, err


def test_unknown_flag_and_missing_module(capsys, monkeypatch):
    monkeypatch.delenv("DURABLE_MODULES", raising=False)
    with pytest.raises(SystemExit) as exc:
        dispatcher_run(["-m", "wf_dispatch", "--bogus"])
    assert exc.value.code == 2
    assert dispatcher_run([]) == 2
    assert "--module" in capsys.readouterr().err


def test_flags_win_over_environment():
    s = load_settings(["-m", "a.b", "--queue", "q1,q2", "-q", "q3", "--concurrency", "7"],
                      environ={"DURABLE_CONCURRENCY": "9", "DURABLE_POLL_INTERVAL": "0.5",
                               "DURABLE_LOG_FORMAT": "JSON", "DURABLE_NO_WAIT": "true"})
    assert s.queues == ("q1", "q2", "q3") and s.concurrency == 7 and s.poll_interval_s == 0.5
    assert s.log_format == "json" and s.no_wait is True and s.metrics_port == 9464
    assert s.metrics_host == "127.0.0.1"


def test_json_log_lines_carry_exception_text():
    import logging

    from durable.dispatcher.logs import JsonFormatter

    try:
        raise ValueError("bad thing")
    except ValueError:
        import sys as _sys

        record = logging.LogRecord("dispatcher", logging.ERROR, __file__, 1, "failed %s", ("here",), _sys.exc_info())
    record.owner = "host:1:abc"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "error" and doc["logger"] == "dispatcher" and doc["message"] == "failed here"
    assert "ValueError: bad thing" in doc["exc"] and doc["owner"] == "host:1:abc" and doc["ts"].endswith("Z")
