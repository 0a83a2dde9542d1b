"""The dispatcher's command line as real subprocesses, bad input and probes: --help,
module import failures, no workflows, an unreachable database (retry or --no-wait), a
metrics port in use, /healthz and /readyz, the second signal; plus the claim query not
letting runs of workflows nobody serves crowd out the ones it can run. (Flag and
environment validation in-process: tests/unit/test_dispatcher_settings.py.)"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import durable
from durable.dispatcher.settings import OPTIONS
from test_dispatcher import DispatcherProc, wait_http
import wf_dispatch
from helpers import ROOT, SUPPORT

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SUPPORT)])
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], cwd=str(cwd), env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# --- help -----------------------------------------------------------------------------------


def test_help_documents_every_setting(tmp_path):
    out = _run(["--help"], tmp_path)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for o in OPTIONS:
        assert o.flags[-1] in text and o.env in text, o
    assert "durable-dispatcher" in text and "Exit status" in text


# --- start-up failures (real subprocesses) --------------------------------------------------


def test_module_that_fails_to_import_shows_its_traceback(tmp_path):
    (tmp_path / "broken_flows.py").write_text("import durable\n\nraise RuntimeError('boom at import')\n")
    out = _run(["-m", "broken_flows", "--dsn", UNREACHABLE], tmp_path)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "boom at import" in out.stderr and "broken_flows" in out.stderr


def test_no_workflows_registered(tmp_path):
    (tmp_path / "no_flows.py").write_text("import durable\n\nVALUE = 1\n")
    out = _run(["-m", "no_flows", "--dsn", UNREACHABLE, "--log-format", "json"], tmp_path)
    assert out.returncode == 2
    last = json.loads(out.stderr.strip().splitlines()[-1])
    assert last["level"] == "error" and "no workflows are registered" in last["message"]
    assert {"ts", "logger"} <= set(last)


def test_unreachable_database_with_no_wait_fails_fast(tmp_path):
    started = time.monotonic()
    out = _run(["-m", "wf_dispatch", "--dsn", UNREACHABLE, "--no-wait", "--connect-timeout", "2",
                "--metrics-port", "0"], tmp_path)
    assert out.returncode == 1, out.stderr
    assert "database unreachable and --no-wait given" in out.stderr
    assert "127.0.0.1" in out.stderr and time.monotonic() - started < 20


def test_metrics_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run(["-m", "wf_dispatch", "--dsn", UNREACHABLE, "--metrics-port", str(port)], tmp_path)
    assert out.returncode == 2
    assert "already in use" in out.stderr and str(port) in out.stderr


def test_waits_for_an_unreachable_database_and_probes_say_so(tmp_path):
    p = DispatcherProc(["-m", "wf_dispatch", "--dsn", UNREACHABLE, "--connect-timeout", "1", "--metrics-port", "0",
                        "--log-format", "json", "--log-level", "debug"], tmp_path / "d.log", _env())
    try:
        rec = p.wait_for(lambda r: "serving metrics" in r.get("message", ""))
        port = int(rec["message"].rsplit(":", 1)[1].split("/")[0])
        p.wait_for(lambda r: "database unreachable at start" in r.get("message", ""))
        assert asyncio.run(wait_http(port, "/healthz", 200)) .startswith("ok")
        assert "connecting" in asyncio.run(wait_http(port, "/readyz", 503))
        p.wait_for(lambda r: "still unreachable" in r.get("message", ""), timeout=15)  # it retries
        warnings = [r for r in p.records() if "unreachable" in r.get("message", "") and r["level"] == "warning"]
        assert len(warnings) == 1, "the outage is logged once at warning level"
        p.popen.send_signal(signal.SIGTERM)
        assert p.popen.wait(15) == 0
    finally:
        p.stop()


# --- a running dispatcher ------------------------------------------------------------------


async def test_probes_metrics_and_second_signal(db, tmp_path):
    env = _env(DURABLE_SHUTDOWN_GRACE="60", DURABLE_LOG_FORMAT="json", DURABLE_SCHEMA=db.schema)
    p = DispatcherProc(["-m", "wf_dispatch", "--dsn", db.dsn, "--metrics-port", "0", "--poll-interval", "0.5"],
                       tmp_path / "d.log", env)
    try:
        p.wait_ready()
        port = p.ready["metrics_port"]
        assert (await wait_http(port, "/healthz", 200)).startswith("ok")
        assert (await wait_http(port, "/readyz", 200)).startswith("ready")
        async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
            h = await client.start(wf_dispatch.napper, 60.0)
            deadline = time.monotonic() + 20
            while (await h.info()).status != "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            metrics = await wait_http(port, "/metrics", 200)
            assert "durable_" in metrics and "durable_queue_depth" in metrics
            p.popen.send_signal(signal.SIGTERM)  # the 60 s step holds shutdown for the 60 s grace...
            p.wait_for(lambda r: "SIGTERM received" in r.get("message", ""))
            assert "shutting down" in await wait_http(port, "/readyz", 503)
            sent = time.monotonic()
            p.popen.send_signal(signal.SIGINT)  # ...unless a second signal ends it at once
            code = await asyncio.to_thread(p.popen.wait, 10)
            assert code == 1 and time.monotonic() - sent < 5
            assert any("exiting now" in r.get("message", "") for r in p.records())
            info = await h.info()
            assert info.status == "running" and info.lease_owner == p.ready["owner"]  # expires later
    finally:
        p.stop()


# --- claiming only what this process can run -----------------------------------------------


async def test_runs_of_unknown_workflows_stay_pending_and_do_not_block_others(db):
    """40 due runs of a workflow (and a version) nobody registered sit ahead of a known
    run; an engine claiming 4 at a time must still claim the known one, and leave the
    unknown ones pending and untouched."""
    unknown = durable.runtime.registry.WorkflowDef(name="nobody.knows", version=1, fn=wf_dispatch.noop.fn,
                                           takes_input=True, input_type=None, result_type=None)
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        for i in range(40):
            await client.start(unknown, i)
        known = await client.start(wf_dispatch.one, 7)
    conn = await db.conn()
    # half of them: a version of a registered workflow that this process does not have
    # (every one due a minute before the known run, so a claim of 4 in due order meets them first)
    await conn.execute("UPDATE durable_runs SET workflow = 'dispatch.one', version = 2 "
                       "WHERE id <> %s AND (input::text::int) %% 2 = 0", (known.run_id,))
    await conn.execute("UPDATE durable_due d SET workflow = r.workflow || ':' || r.version::text, due_at = %s "
                       "FROM durable_runs r WHERE r.tree_key = d.tree_key AND r.id = d.run_id AND r.id <> %s",
                       (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1), known.run_id))
    async with durable.Engine(db.dsn, schema=db.schema, concurrency=4, poll_interval_s=0.2) as engine:
        assert await engine.get_handle(known.run_id).result(timeout=20) == 7
    rows = await (await conn.execute(
        "SELECT status, count(*) FROM durable_runs WHERE id <> %s GROUP BY 1", (known.run_id,))).fetchall()
    assert rows == [("pending", 40)]
