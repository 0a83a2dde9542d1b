"""The README's quick start is runnable as written (against the test database)."""

import os
import re
import subprocess
import sys

from helpers import ROOT


def _block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"## {re.escape(title)}\n\n```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block under '## {title}'"
    return m.group(1)


def test_quick_start_runs_as_written(db, tmp_path):
    script = tmp_path / "quick_start.py"
    script.write_text(_block("Quick start"))
    env = {**os.environ, "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[{'order': '1', 'charged': True}, {'order': '2', 'charged': True}]"


def test_changing_code_safely_runs_as_written(db, tmp_path):
    script = tmp_path / "changing_code.py"
    script.write_text(_block("Changing workflow code safely"))
    env = {**os.environ, "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["charged o-1", "True completed"]
