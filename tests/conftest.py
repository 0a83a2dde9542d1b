"""Fixtures for every tier (tests/unit, tests/integration, tests/procs). Database plumbing
lives in support/dbharness.py, shared helpers in support/helpers.py; tests/support is on
sys.path (pytest's ``pythonpath`` option in pyproject.toml), so tests, worker processes and
dispatchers import the support modules by name (``import wf_core``, ``from helpers import
eventually``)."""

from __future__ import annotations

import subprocess
import sys
from typing import AsyncIterator, Callable

import pytest

import durable
from dbharness import BACKEND, TestDB, db, fresh_schema, pg_dsn  # noqa: F401
from helpers import ROOT, SUPPORT, TESTS, new_engine

# fixtures that reach PostgreSQL (or start processes that do): never in tests/unit
DATABASE_FIXTURES = frozenset({"pg_dsn", "fresh_schema", "db", "engine", "worker_procs"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/unit runs without a database: refuse a unit test that asks for one."""
    unit = TESTS / "unit"
    wrong = [item.nodeid for item in items
             if unit in item.path.parents and DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if wrong:
        raise pytest.UsageError("tests under tests/unit must not use the database fixtures "
                                f"({', '.join(sorted(DATABASE_FIXTURES))}); move them to tests/integration: "
                                + ", ".join(wrong))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only(reason): a test of plain PostgreSQL's own machinery (plans, "
                                       "catalogs), skipped on the Citus backend with the reason")


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("postgres_only")
    if mark is not None and BACKEND == "citus":
        pytest.skip(f"plain PostgreSQL only: {mark.kwargs.get('reason') or (mark.args[0] if mark.args else '')}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BACKEND != "citus":
        terminalreporter.write_line("Citus tier not run: DURABLE_TEST_BACKEND=citus runs this suite on a Citus "
                                    "cluster (start one with scripts/citus-cluster)", yellow=True, bold=True)
    else:
        terminalreporter.write_line("Citus tier: this suite ran on a Citus cluster (DURABLE_TEST_BACKEND=citus)",
                                    green=True, bold=True)


@pytest.fixture
async def engine(db) -> AsyncIterator[durable.Engine]:
    """An open Engine on the test's schema, executing runs in-process (fast polls)."""
    async with new_engine(db) as e:
        yield e


@pytest.fixture
def worker_procs(db) -> Callable[..., subprocess.Popen]:
    """Start worker subprocesses (tests/support/worker_proc.py) on the test's schema; each is
    killed at teardown. ``spawn("wf_module", "--lease-ttl", "2")`` returns the Popen once
    it printed 'ready'."""
    procs: list[subprocess.Popen] = []

    def spawn(modules: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(SUPPORT / "worker_proc.py"), db.dsn, db.schema, modules, *args],
                             stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
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
