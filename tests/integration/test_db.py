"""Connection plumbing against real servers (reachable and not). (DSN validation, masking
and resolution without a server: tests/unit/test_dsn.py; the embedded server:
tests/procs/test_embedded.py.)"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from durable.store.connections import connect, connect_sync, open_pool
from durable.errors import DatabaseUnavailableError

SECRET = "s3cr3tPW"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_closed_port_is_unavailable() -> None:
    port = _closed_port()
    dsn = f"postgresql://app:{SECRET}@127.0.0.1:{port}/app"
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await connect(dsn, schema="durable", timeout=2)
    assert time.monotonic() - start < 3
    msg = str(info.value)
    assert f"host 127.0.0.1, port {port}" in msg and "'app'" in msg
    assert "2 s" in msg and "Check that the server is running" in msg
    assert SECRET not in msg


@pytest.fixture
def silent_port():
    """A port whose listener accepts TCP connections (kernel backlog) but never answers:
    a server that hangs, to exercise the timeout for real."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.parametrize("timeout", [1.0, 2.5])
async def test_silent_server_is_bounded_by_timeout(silent_port: int, timeout: float) -> None:
    dsn = f"postgresql://app:{SECRET}@127.0.0.1:{silent_port}/app"
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await connect(dsn, schema="durable", timeout=timeout)
    elapsed = time.monotonic() - start
    assert timeout - 0.1 <= elapsed < timeout + 1
    msg = str(info.value)
    assert f"no answer within {timeout:g} s" in msg and SECRET not in msg


async def test_pool_on_silent_server_is_bounded(silent_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="no answer within 1 s"):
        await open_pool(f"postgresql://app@127.0.0.1:{silent_port}/app", schema="durable", timeout=1)
    assert time.monotonic() - start < 2


def test_sync_connect_silent_server(silent_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        connect_sync(f"postgresql://app@127.0.0.1:{silent_port}/app", schema="durable", timeout=2)
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("timeout", [1.0, 2.5])
async def test_unroutable_host_is_bounded_by_timeout(timeout: float) -> None:
    dsn = f"postgresql://app:{SECRET}@10.255.255.1:5432/app"
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await connect(dsn, schema="durable", timeout=timeout)
    assert time.monotonic() - start < timeout + 1
    assert "10.255.255.1" in str(info.value) and SECRET not in str(info.value)


async def test_pool_on_unreachable_server_fails_fast() -> None:
    port = _closed_port()
    dsn = f"postgresql://app:{SECRET}@127.0.0.1:{port}/app"
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await open_pool(dsn, schema="durable", timeout=1.5)
    assert time.monotonic() - start < 2.5
    assert f"port {port}" in str(info.value) and SECRET not in str(info.value)
    assert "Connection refused" in str(info.value) or "connect" in str(info.value)


async def test_pool_on_unroutable_host_is_bounded() -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        await open_pool("postgresql://app@10.255.255.1:5432/app", schema="durable", timeout=1)
    assert time.monotonic() - start < 2


def test_sync_connect_closed_port() -> None:
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=f"port {port}"):
        connect_sync(f"postgresql://app:{SECRET}@127.0.0.1:{port}/app", schema="durable", timeout=2)
    assert time.monotonic() - start < 3


async def test_wrong_database_is_unavailable_with_reason(pg_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = make_conninfo(**{**conninfo_to_dict(pg_dsn), "dbname": "no_such_db_durable"})
    with pytest.raises(DatabaseUnavailableError, match="no_such_db_durable"):
        await connect(dsn, schema="durable", timeout=5)


@pytest.mark.parametrize("schema", ["plain_schema", "Mixed Case", 'we"ird\\ one'])
async def test_search_path_is_the_schema(pg_dsn: str, schema: str) -> None:
    conn = await connect(pg_dsn, schema=schema, timeout=5)
    try:
        cur = await conn.execute("SELECT current_setting('search_path')")
        from psycopg import sql

        expected = sql.Identifier(schema).as_string(conn)
        assert (await cur.fetchone())[0] == expected
        assert conn.autocommit
    finally:
        await conn.close()
    with connect_sync(pg_dsn, schema=schema, timeout=5) as sconn:
        assert sconn.execute("SHOW search_path").fetchone()[0] == expected


async def test_pool_connections_have_search_path(db) -> None:
    pool = await open_pool(db.dsn, schema=db.schema, min_size=2, max_size=4, timeout=5)
    try:
        async with pool.connection() as conn:
            assert conn.autocommit
            cur = await conn.execute("SELECT count(*) FROM durable_runs")  # unqualified: search_path
            assert (await cur.fetchone())[0] == 0

        async def channel() -> str:
            async with pool.connection() as c:
                return (await (await c.execute("SELECT durable_channel()")).fetchone())[0]

        assert set(await asyncio.gather(*(channel() for _ in range(8)))) == {f"durable_wake_{db.schema}"}
    finally:
        await pool.close()
