"""The metrics queue collector (durable.observe.metrics) against a real database: it reads
depth / oldest-ready age / waiting per queue, keeps reporting drained queues as 0, replaces
a killed connection within the scrape, and a database failure (or no server at all) yields
nothing and a warning instead of failing the scrape. (Metric names and the Grafana
dashboard: tests/unit/test_metrics_dashboard.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Iterator

import pytest
from prometheus_client import CollectorRegistry

from durable.observe import metrics
from durable.store.connections import connect
from durable.store.migrate import migrate
from durable.store.rows import tree_key_of

TEST_DSN = os.environ.get("DURABLE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _metrics_installed() -> Iterator[None]:
    metrics.install()
    yield
    metrics.install()


@pytest.fixture
def queue_schema() -> Iterator[tuple[str, Any]]:
    """A migrated schema whose clock stands still (durable_now() is fixed)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(TEST_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"test database unavailable: {exc}")
    schema = f"durable_mtest_{uuid.uuid4().hex[:8]}"

    async def migrated() -> None:
        aconn = await connect(TEST_DSN, schema=schema, timeout=10)
        try:
            await migrate(aconn, schema)
        finally:
            await aconn.close()

    asyncio.run(migrated())
    conn.execute(f"SET search_path TO {schema}")
    conn.execute("""CREATE OR REPLACE FUNCTION durable_now() RETURNS timestamptz LANGUAGE sql STABLE
                    AS $$ SELECT '2030-01-01 00:00:00+00'::timestamptz $$""")
    try:
        yield schema, conn
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            out[(s.name, s.labels.get("queue", ""))] = s.value
    return out


def test_queue_collector_reads_database(queue_schema: tuple[str, Any],
                                        caplog: pytest.LogCaptureFixture) -> None:
    schema, conn = queue_schema
    # every run in flight has one row in the claim queue: when it is due, or that it is leased
    rows = [
        ("q1", "-10 seconds", False), ("q1", "-5 seconds", False),     # pending, due: ready
        ("q1", "-1 second", False),                                     # suspended, woken: ready
        ("q1", "60 seconds", False), ("q1", None, False),               # suspended: a timer, an event
        ("q1", None, True),                                             # running (leased)
        ("q2", "30 seconds", False),                                    # a delayed start
    ]
    for queue, offset, leased in rows:
        run_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at, leased) VALUES (%s, %s, %s, 'x:1', "
            "CASE WHEN %s::interval IS NULL THEN NULL ELSE durable_now() + %s::interval END, %s)",
            (tree_key_of(run_id), run_id, queue, offset, offset, leased),
        )
    registry = CollectorRegistry()
    collector = metrics.register_queue_collector(TEST_DSN, schema, registry=registry)
    try:
        got = _samples(registry)
        assert got[("durable_queue_depth", "q1")] == 3
        assert got[("durable_queue_depth", "q2")] == 0
        assert got[("durable_queue_oldest_ready_seconds", "q1")] == pytest.approx(10.0)
        assert got[("durable_queue_oldest_ready_seconds", "q2")] == 0
        assert got[("durable_runs_waiting", "q1")] == 2
        assert got[("durable_runs_waiting", "q2")] == 1
        names = {name for name, _ in got}
        assert names == {f.name for f in collector.describe()}

        # A drained queue keeps reporting 0 instead of disappearing.
        conn.execute("DELETE FROM durable_due WHERE queue = 'q1'")
        got = _samples(registry)
        assert got[("durable_queue_depth", "q1")] == 0
        assert got[("durable_runs_waiting", "q1")] == 0

        # A connection killed between scrapes is replaced within the same scrape.
        conn.execute("SELECT pg_terminate_backend(%s::int)", (collector._conn.info.backend_pid,))
        assert _samples(registry)[("durable_queue_depth", "q2")] == 0

        # A database error yields nothing (and a warning), never a failed scrape ...
        conn.execute("ALTER TABLE durable_due RENAME TO durable_due_gone")
        caplog.set_level(logging.WARNING, logger="durable.metrics")
        assert _samples(registry) == {}
        assert b"durable_queue_depth" not in metrics.metrics_text(registry)
        assert any("queue metrics unavailable" in r.getMessage() for r in caplog.records)
        # ... and the collector reconnects once the database is fine again.
        conn.execute("ALTER TABLE durable_due_gone RENAME TO durable_due")
        assert _samples(registry)[("durable_queue_depth", "q2")] == 0
    finally:
        metrics.unregister_queue_collector(collector, registry=registry)
    assert _samples(registry) == {}
    metrics.unregister_queue_collector(collector, registry=registry)  # idempotent


def test_queue_collector_database_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="durable.metrics")
    registry = CollectorRegistry()
    collector = metrics.register_queue_collector(
        "postgresql://postgres@127.0.0.1:1/test", "durable", registry=registry)
    try:
        assert list(collector.collect()) == []
        assert metrics.metrics_text(registry) == b""
        assert any("queue metrics unavailable" in r.getMessage() for r in caplog.records)
    finally:
        metrics.unregister_queue_collector(collector, registry=registry)
