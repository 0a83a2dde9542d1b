"""Start by name across processes: a pure client process that never imports the workflow
module starts a run by name while a worker process serving the workflow executes it, and
gets the typed result; ``durable workers`` (a CLI process) lists live workers and marks
gone ones (stopped cleanly: at once; killed: when their lease time runs out)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import ROOT

CLIENT = r"""
import asyncio, json, sys
from pydantic import BaseModel
import durable

class Receipt(BaseModel):  # the client's own model: it never imports wf_registry
    sku: str
    total: int

async def main(dsn, schema):
    async with durable.Engine(dsn, schema=schema, execute=False, migrate=False) as engine:
        result = await engine.run("registry.checkout", {"sku": "x", "qty": 3}, result_type=Receipt, timeout=60)
        try:
            await engine.start("registry.checkout", {"sku": "x"})
        except durable.PayloadError as exc:
            refused = str(exc)
    print(json.dumps({"type": type(result).__name__, "result": result.model_dump(), "refused": refused,
                      "imported": sorted(m for m in sys.modules if m.startswith("wf_"))}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # tests/support (the wf_* modules) is not importable by the client
    return env


def workers_json(db) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "durable.cli", "--dsn", db.dsn, "--schema", db.schema, "workers",
                          "--json"], capture_output=True, text=True, timeout=60, cwd="/", env=_env())
    assert out.returncode == 0, out.stderr
    return {w["owner"]: w for w in json.loads(out.stdout)}


def test_a_pure_client_process_starts_by_name_and_gets_the_typed_result(db, worker_procs):
    worker = worker_procs("wf_registry", "--queues", "registry")
    done = subprocess.run([sys.executable, "-c", CLIENT, db.dsn, db.schema], capture_output=True, text=True,
                          timeout=120, cwd="/", env=_env())
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["type"] == "Receipt" and got["result"] == {"sku": "x", "total": 750}
    assert got["imported"] == []
    assert "at $: 'qty' is a required property" in got["refused"]
    assert worker.poll() is None


def test_durable_workers_lists_live_workers_and_marks_gone_ones(db, worker_procs):
    stopped = worker_procs("wf_registry", "--queues", "registry", "--concurrency", "3")
    killed = worker_procs("wf_registry", "--queues", "registry,other", "--lease-ttl", "1.5")
    listed = workers_json(db)
    for p, queues in ((stopped, ["registry"]), (killed, ["registry", "other"])):
        w = listed[p.owner]
        assert w["alive"] and w["pid"] == p.pid and w["queues"] == queues and "registry.checkout:1" in w["workflows"]
    assert listed[stopped.owner]["concurrency"] == 3
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(30) == 0
    killed.kill()
    killed.wait(10)
    assert workers_json(db)[stopped.owner]["alive"] is False  # a clean stop expires at once
    deadline = time.monotonic() + 20
    while workers_json(db)[killed.owner]["alive"]:  # a killed one when its lease time is over
        assert time.monotonic() < deadline, "a killed worker stayed alive in `durable workers`"
        time.sleep(0.5)
    # the human table marks both
    out = subprocess.run([sys.executable, "-m", "durable.cli", "--dsn", db.dsn, "--schema", db.schema, "workers"],
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=_env())
    assert out.returncode == 0 and out.stdout.count("expired") == 2, out.stdout
