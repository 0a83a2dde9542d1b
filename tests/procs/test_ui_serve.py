"""Serving the web console as real processes: ``durable ui`` prints its URL, serves the pages,
the static script and live events, and stops on Ctrl-C even with a browser's event stream
open; a bind beyond loopback without a token, or a taken port, is refused before anything
starts; ``durable-dispatcher --ui`` serves the same app next to the dispatcher and stops with
it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from helpers import ROOT, SUPPORT
from test_dispatcher import DispatcherProc

pytest.importorskip("uvicorn")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SUPPORT)])
    env.update(extra)
    return env


def _ui(db, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "durable.cli", "ui", "--dsn", db.dsn, "--schema", db.schema, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env), cwd=str(ROOT))


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read().decode()


def _open_stream(url: str) -> threading.Thread:
    """A browser's event stream, held open until the server ends it."""
    def hold() -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                while r.readline():
                    pass
        except Exception:
            pass
    t = threading.Thread(target=hold, daemon=True)
    t.start()
    return t


def test_durable_ui_serves_and_stops_on_ctrl_c(db):
    p = _ui(db, "--port", "0")
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("durable console: http://127.0.0.1:"), (line, p.stderr.read() if p.poll() else "")
        url = line.split(": ", 1)[1].strip()
        status, _, body = _get(url)
        assert status == 200 and 'id="main"' in body
        status, ctype, js = _get(url + "static/live.js")
        assert status == 200 and "EventSource" in js
        stream = _open_stream(url + "events")
        time.sleep(0.5)
        assert stream.is_alive()
        started = time.monotonic()
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0
        assert time.monotonic() - started < 10
        stream.join(10)
        assert not stream.is_alive()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_durable_ui_json_and_read_only(db):
    p = _ui(db, "--port", "0", "--read-only", "--json")
    try:
        doc = json.loads(p.stdout.readline())  # type: ignore[union-attr]
        assert doc["read_only"] is True and doc["url"].startswith("http://127.0.0.1:")
        assert doc["token_required"] is False
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_beyond_loopback_needs_a_token(db):
    out = subprocess.run([sys.executable, "-m", "durable.cli", "ui", "--dsn", db.dsn, "--schema", db.schema, "--host",
                          "0.0.0.0", "--port", "0"], capture_output=True, text=True, env=_env(), timeout=30)
    assert out.returncode == 2 and out.stdout == ""
    assert "without an access token: pass --token TOKEN or set DURABLE_UI_TOKEN" in out.stderr
    out = subprocess.run([sys.executable, "-m", "durable.cli", "ui", "--dsn", db.dsn, "--schema", db.schema, "--host",
                          "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=30,
                         env=_env(DURABLE_UI_TOKEN="short"))
    assert out.returncode == 2 and "give at least 8" in out.stderr


def test_a_taken_port_is_refused(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "durable.cli", "ui", "--dsn", db.dsn, "--schema", db.schema,
                              "--port", str(port)], capture_output=True, text=True, env=_env(), timeout=30)
    assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_dispatcher_serves_the_console(db, tmp_path):
    env = {**_env(), "WF_DISPATCH_LOG": str(tmp_path)}
    args = ["-m", "wf_dispatch", "--dsn", db.dsn, "--schema", db.schema, "--metrics-port", "0",
            "--log-format", "json", "--ui", "127.0.0.1:0"]
    d = DispatcherProc(args, tmp_path / "dispatcher.log", env)
    try:
        rec = d.wait_for(lambda r: r.get("event") == "console", 30)
        url = rec["url"]
        d.wait_ready()
        status, _, body = _get(url)
        assert status == 200 and 'data-live="runs"' in body
        stream = _open_stream(url + "events")
        time.sleep(0.5)
        d.popen.send_signal(signal.SIGTERM)
        assert d.popen.wait(20) == 0, d.text()
        stream.join(10)
        assert not stream.is_alive()
    finally:
        d.stop()


def test_dispatcher_ui_beyond_loopback_without_token_exits_2(db, tmp_path):
    out = subprocess.run([sys.executable, "-m", "dispatcher", "-m", "wf_dispatch", "--dsn", db.dsn, "--ui",
                          "0.0.0.0:0"], capture_output=True, text=True, env=_env(), timeout=30, cwd=str(SUPPORT))
    assert out.returncode == 2
    assert "--ui-token / DURABLE_UI_TOKEN" in out.stderr and "without an access token" in out.stderr
