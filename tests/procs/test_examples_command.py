"""An example runs through its documented command (``python -m examples.iwf``) in its own
process, against the test's database. (Every example in-process:
tests/integration/test_examples.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT


def test_an_example_runs_with_its_one_command(db):
    env = {**os.environ, "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema, "NO_COLOR": "1"}
    p = subprocess.run([sys.executable, "-m", "examples.iwf"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "R-A: refunded 60.00" in p.stdout and "R-B: refunded 90.00" in p.stdout
    assert "Traceback" not in p.stderr
