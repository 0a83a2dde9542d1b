"""Shared fixtures. Database plumbing lives in dbharness.py; engine fixtures go below."""

from __future__ import annotations

try:  # tests/ as a package or as a plain rootdir folder
    from .dbharness import TestDB, db, fresh_schema, pg_dsn  # noqa: F401
except ImportError:
    from dbharness import TestDB, db, fresh_schema, pg_dsn  # noqa: F401

import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

import durable

TESTS = Path(__file__).parent


@pytest.fixture
async def engine(db) -> AsyncIterator[durable.Engine]:
    """An open Engine on the test's schema, executing runs in-process (fast polls)."""
    e = durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2, lease_ttl_s=5.0, sticky_grace_s=0.5)
    async with e:
        yield e


@pytest.fixture
def worker_procs(db) -> Callable[..., subprocess.Popen]:
    """Start worker subprocesses (tests/worker_proc.py) on the test's schema; each is
    killed at teardown. ``spawn("wf_module", "--lease-ttl", "2")`` returns the Popen once
    it printed 'ready'."""
    procs: list[subprocess.Popen] = []

    def spawn(modules: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(TESTS / "worker_proc.py"), db.dsn, db.schema, modules, *args],
                             stdout=subprocess.PIPE, text=True, cwd=str(TESTS.parent))
        line = p.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            p.kill()
            raise RuntimeError(f"worker did not start: {line!r}")
        p.owner = line.split()[1]  # type: ignore[attr-defined]
        procs.append(p)
        return p

    yield spawn  # type: ignore[misc]
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
