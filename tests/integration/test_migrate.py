"""Migration runner against a real PostgreSQL server."""

from __future__ import annotations

import asyncio

import pytest
from psycopg import sql

from durable.errors import ConfigurationError, SchemaVersionError
from durable.store.migrate import LATEST_VERSION, available_migrations, check_schema, migrate, schema_version


async def _rows(conn, schema: str) -> list[tuple]:
    cur = await conn.execute(
        sql.SQL("SELECT version, name, applied_at FROM {}.durable_migrations ORDER BY version").format(
            sql.Identifier(schema)
        )
    )
    return await cur.fetchall()


def test_migrations_are_found_and_sorted() -> None:
    migs = available_migrations()
    assert migs, "no migration files found"
    assert [m.version for m in migs] == sorted({m.version for m in migs})
    assert migs[0].version == 1 and migs[0].name == "initial"
    assert LATEST_VERSION == migs[-1].version


async def test_migrate_applies_all_and_records_versions(fresh_schema) -> None:
    conn = await fresh_schema.conn()
    assert await schema_version(conn, fresh_schema.schema) is None

    version = await migrate(conn, fresh_schema.schema)

    assert version == LATEST_VERSION
    rows = await _rows(conn, fresh_schema.schema)
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in available_migrations()]
    assert await schema_version(conn, fresh_schema.schema) == LATEST_VERSION
    assert await check_schema(conn, fresh_schema.schema) == LATEST_VERSION
    # The files ran inside the schema (search_path), not in public.
    cur = await conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'durable_runs'",
        (fresh_schema.schema,),
    )
    assert (await cur.fetchone())[0] == 1
    cur = await conn.execute("SELECT durable_channel()")
    assert (await cur.fetchone())[0] == f"durable_wake_{fresh_schema.schema}"


async def test_migrate_twice_is_a_noop(db) -> None:
    conn = await db.conn()
    before = await _rows(conn, db.schema)
    assert await migrate(conn, db.schema) == LATEST_VERSION
    assert await _rows(conn, db.schema) == before


async def test_concurrent_migrations_on_a_fresh_schema(fresh_schema) -> None:
    conns = [await fresh_schema.conn() for _ in range(4)]
    results = await asyncio.gather(*(migrate(c, fresh_schema.schema) for c in conns))
    assert results == [LATEST_VERSION] * len(conns)
    rows = await _rows(conns[0], fresh_schema.schema)
    assert [r[0] for r in rows] == [m.version for m in available_migrations()]


async def test_newer_database_is_refused(db) -> None:
    conn = await db.conn()
    await conn.execute(
        sql.SQL("INSERT INTO {}.durable_migrations (version, name) VALUES (%s, 'future')").format(
            sql.Identifier(db.schema)
        ),
        (LATEST_VERSION + 1,),
    )
    expected = (
        f"database schema {db.schema} is at version {LATEST_VERSION + 1} but this durable knows up to "
        f"{LATEST_VERSION}: upgrade durable (pip install -U durable) or point at another schema"
    )
    with pytest.raises(SchemaVersionError) as info:
        await migrate(conn, db.schema)
    assert str(info.value) == expected
    with pytest.raises(SchemaVersionError) as info:
        await check_schema(conn, db.schema)
    assert str(info.value) == expected


async def test_check_schema_on_empty_schema(fresh_schema) -> None:
    conn = await fresh_schema.conn()
    with pytest.raises(SchemaVersionError, match="run `durable migrate` or start the Engine with migrate=True"):
        await check_schema(conn, fresh_schema.schema)  # schema does not exist at all
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(fresh_schema.schema)))
    with pytest.raises(SchemaVersionError, match="is not migrated"):
        await check_schema(conn, fresh_schema.schema)


async def test_migrate_needs_autocommit(fresh_schema) -> None:
    conn = await fresh_schema.conn(autocommit=False)
    with pytest.raises(ConfigurationError, match="autocommit"):
        await migrate(conn, fresh_schema.schema)
