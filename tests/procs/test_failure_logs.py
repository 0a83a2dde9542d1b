"""A dispatcher subprocess with ``--log-format json`` logs each failed run as one JSON
line with run_id, workflow, attempt, error_type (the root cause's type) and reason, and
never the run's input (issue 14: the dispatcher used to log nothing about outcomes)."""

from __future__ import annotations

import os

import pytest

import durable
import wf_failures as wf
from helpers import ROOT, SUPPORT
from test_dispatcher import DispatcherProc


async def test_dispatcher_logs_a_failed_run_as_one_json_line(db, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SUPPORT)])
    p = DispatcherProc(["-m", "wf_failures", "--dsn", db.dsn, "--schema", db.schema, "--metrics-port", "0",
                        "--log-format", "json", "--log-level", "debug", "--poll-interval", "0.5"],
                       tmp_path / "d.log", env)
    try:
        p.wait_ready()
        async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
            h = await client.start(wf.top, {"tag": "procs", "secret": "SECRET-IN-INPUT"})
            with pytest.raises(durable.RunFailedError) as got:
                await h.result(timeout=30)
        assert got.value.root_type == "Declined"
        line = p.wait_for(lambda r: r.get("run_id") == str(h.run_id) and r.get("level") == "warning")
        assert line["logger"] == "durable.runs" and line["event"] == "run.failed"
        assert (line["workflow"], line["attempt"], line["error_type"], line["reason"]) == (
            "fail.top", 1, "Declined", "failed")
        p.wait_for(lambda r: r.get("workflow") == "fail.declined" and r.get("reason") == "failed")
        outcome_lines = [r for r in p.records() if r.get("run_id") == str(h.run_id) and r["level"] != "debug"]
        assert len(outcome_lines) == 1, outcome_lines
        assert any(r.get("event") == "run.claimed" and r.get("run_id") == str(h.run_id) for r in p.records()), \
            "per-run DEBUG lines carry run_id"
        assert "SECRET-IN-INPUT" not in p.text()
    finally:
        p.stop()
