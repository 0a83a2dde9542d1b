"""The operator CLI as its own process (``python -m durable.cli``): no database is exit
code 4 with a one-line reason and no traceback (human and --json), and --help documents
the exit codes. (Every command against a real database: tests/integration/test_cli.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from helpers import ROOT


def test_no_database_is_exit_code_4_without_a_traceback():
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DURABLE_DSN", None)
    for argv in (["runs"], ["--json", "wait", str(uuid.uuid4())]):
        p = subprocess.run([sys.executable, "-m", "durable.cli", "--dsn", "postgresql://postgres@127.0.0.1:1/x",
                            *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 4, p.stderr
        assert "could not connect" in p.stderr and "Traceback" not in p.stderr
    assert json.loads(p.stdout)["exit_code"] == 4
    p = subprocess.run([sys.executable, "-m", "durable.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "exit codes" in p.stdout and "5  wait timed out" in p.stdout
