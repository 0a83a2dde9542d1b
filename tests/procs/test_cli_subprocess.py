"""The operator CLI as its own process (``python -m durable.cli``): no database is exit
code 4 with a one-line reason and no traceback (human and --json), and --help documents
the exit codes. (Every command against a real database: tests/integration/test_cli.py.)"""

from __future__ import annotations

import json
import os
import shlex
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


# --- a closed stdout (issue 14) -----------------------------------------------------------------


def _env(db) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "DURABLE_DSN": db.dsn, "DURABLE_SCHEMA": db.schema}
    env.pop("COLUMNS", None)
    return env


async def _many_runs(db, n: int) -> None:
    from helpers import execute
    await execute(db, """
        INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input)
        SELECT durable_tree_key(g), g, g, g, 'pipe.one', 1, 'default', 'completed', '{}'
          FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, %s)) s""", n)


async def test_durable_runs_into_head_stops_quietly(db):
    """`durable runs | head -1` through a real pipe: head's line, nothing on stderr, and
    durable's own status 141 (128 + SIGPIPE, as coreutils report) once head has gone; the
    output (about 100 KB) is more than a pipe holds, so durable does write after head left."""
    await _many_runs(db, 1000)
    cmd = f"{shlex.quote(sys.executable)} -m durable.cli runs --limit 1000 | head -1; echo \"${{PIPESTATUS[@]}}\" >&2"
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=_env(db), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    assert p.stdout.split() == ["RUN", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "TOOK", "ERROR"]
    assert p.stderr.strip() == "141 0", p.stderr  # no "unexpected error", no "Exception ignored"


async def test_a_reader_gone_before_the_first_line_is_exit_141_without_noise(db):
    await _many_runs(db, 3)
    for argv in (["runs"], ["runs", "--json"]):
        p = subprocess.Popen([sys.executable, "-m", "durable.cli", *argv], cwd=ROOT, env=_env(db),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader goes away before durable prints anything
        err = p.stderr.read()
        assert p.wait(timeout=60) == 141
        assert err == b"", err
    p = subprocess.run([sys.executable, "-m", "durable.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert "141  the reader of the output went away" in p.stdout
