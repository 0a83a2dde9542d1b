"""Where the web console may listen (durable/ui/bind.py) and the dispatcher's --ui settings:
loopback by default, beyond it only with a token; every bad value a typed error naming
the fix. No database."""

from __future__ import annotations

import os

import pytest

from durable.dispatcher.settings import load_settings
from durable.errors import ConfigurationError, ConsoleBindError
from durable.ui.bind import check_token, is_loopback, parse_bind, url_of


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("::1", True),
                                        ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
                                        ("example.com", False)])
def test_loopback(host, loop):
    assert is_loopback(host) is loop


@pytest.mark.parametrize("text, expected", [("8484", ("127.0.0.1", 8484)), ("0", ("127.0.0.1", 0)),
                                            ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("[::1]:8484", ("::1", 8484)),
                                            ("localhost:1", ("localhost", 1))])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "port", "70000", ":8484", "1.2.3.4:", "-1", "[::1]8484"])
def test_parse_bind_refuses(text):
    with pytest.raises(ConsoleBindError, match=r"is not \[HOST:\]PORT: give e.g."):
        parse_bind(text)


def test_a_token_is_required_beyond_loopback_only():
    check_token("127.0.0.1", None)
    check_token("0.0.0.0", "long-enough-token")
    with pytest.raises(ConsoleBindError, match="without an access token: pass --token TOKEN or set DURABLE_UI_TOKEN") as e:
        check_token("0.0.0.0", None)
    assert e.value.host == "0.0.0.0" and isinstance(e.value, ConfigurationError)
    with pytest.raises(ConsoleBindError, match="give at least 8"):
        check_token("127.0.0.1", "short")


def test_url_of():
    assert url_of("0.0.0.0", 8484) == "http://127.0.0.1:8484/"
    assert url_of("::1", 1) == "http://[::1]:1/"


@pytest.fixture
def no_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("DURABLE_")]:
        monkeypatch.delenv(k)


def test_dispatcher_ui_settings(no_env):
    s = load_settings(["-m", "x", "--ui", "9000"])
    assert s.ui_bind() == ("127.0.0.1", 9000) and s.ui_token is None and not s.ui_read_only
    assert load_settings(["-m", "x"]).ui_bind() is None
    s = load_settings(["-m", "x", "--ui", "0.0.0.0:9000"],
                      environ={"DURABLE_UI_TOKEN": "a-token-of-length", "DURABLE_UI_READ_ONLY": "true"})
    assert s.ui_bind() == ("0.0.0.0", 9000) and s.ui_token == "a-token-of-length" and s.ui_read_only


@pytest.mark.parametrize("argv, expected", [
    (["--ui", "0.0.0.0:9000"], "--ui-token / DURABLE_UI_TOKEN: the console would listen on 0.0.0.0"),
    (["--ui", "nine"], "--ui / DURABLE_UI: --ui 'nine' is not [HOST:]PORT"),
    (["--ui", "9000", "--ui-token", "abc"], "give at least 8"),
])
def test_dispatcher_ui_refused(no_env, argv, expected):
    with pytest.raises(ConfigurationError) as e:
        load_settings(["-m", "x", *argv])
    assert expected in str(e.value)
