"""Resume after a fixed bug, across processes: a worker process runs a workflow whose step
has a bug (its module is a file written for this test), the run fails; the worker is
stopped, the module file is fixed, a new worker starts with the new code, and the run is
resumed from a client process. Completed steps are not executed again (each execution
appends a line to a file), the fixed step runs, the run completes under its own id.
(In-process re-drive tests: tests/integration/test_redrive.py.)"""

from __future__ import annotations

import importlib
import signal
import sys

import pytest

import durable

from helpers import new_engine, rows

MODULE = '''
import os
import durable

CALLS = os.environ["REDRIVE_CALLS"]


def _count(name):
    with open(CALLS, "a") as f:
        f.write(name + "\\n")


@durable.step(retry=durable.RetryPolicy(max_attempts=1))
async def reserve(order: str) -> str:
    _count("reserve")
    return "reserved " + order


@durable.step(retry=durable.RetryPolicy(max_attempts=1))
async def charge(order: str) -> str:
    _count("charge")
    {charge_body}


@durable.step(retry=durable.RetryPolicy(max_attempts=1))
async def ship(order: str) -> str:
    _count("ship")
    return "shipped " + order


@durable.workflow("redrive_fix.order")
async def order(ctx: durable.Context, order: str) -> list:
    return [await ctx.step(reserve, order), await ctx.step(charge, order), await ctx.step(ship, order)]
'''
BUGGY = 'raise KeyError("card")  # the bug'
FIXED = 'return "charged " + order'


def _write(path, body: str) -> None:
    path.write_text(MODULE.replace("{charge_body}", body))


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


async def test_resume_after_the_module_was_fixed_in_a_restarted_worker(db, worker_procs, tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("REDRIVE_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / "redrive_fix.py", BUGGY)
    sys.modules.pop("redrive_fix", None)
    mod = importlib.import_module("redrive_fix")  # the client registers the workflow to start it

    worker = worker_procs("redrive_fix")
    async with new_engine(db, execute=False) as client:
        run = await client.start(mod.order, "o-1")
        with pytest.raises(durable.RunFailedError) as failed:
            await run.result(timeout=30)
        assert "KeyError" in str(failed.value)
        assert calls.read_text().split() == ["reserve", "charge"]

        _stop(worker)
        _write(tmp_path / "redrive_fix.py", FIXED)  # the bug is fixed; a worker starts with the new code
        worker_procs("redrive_fix")

        resumed = await client.resume(run.run_id)
        assert resumed.run_id == run.run_id
        assert await resumed.result(timeout=30) == ["reserved o-1", "charged o-1", "shipped o-1"]
    assert calls.read_text().split() == ["reserve", "charge", "charge", "ship"]  # reserve not repeated
    kinds = [r[0] for r in await rows(db, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq",
                                      run.run_id)]
    assert kinds == ["step_completed", "step_failed", "resumed", "step_completed", "step_completed"]
    sys.modules.pop("redrive_fix", None)


def test_readme_redrive_example_runs_as_written(db, tmp_path):
    import os
    import re
    import subprocess

    from helpers import ROOT
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Re-driving runs\n\n```python\n(.*?)```", text, re.S)
    assert m, "README has no python block under '## Re-driving runs'"
    script = tmp_path / "redrive_example.py"
    script.write_text(m.group(1))
    env = {**os.environ, "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["reserve o-1", "failed", "['reserved o-1', 'charged o-1']", "reserve o-1",
                                          "True"], out.stdout
