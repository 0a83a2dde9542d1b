"""The migrations are immutable once released, and sql/schema.sql is what they build."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

import durable
from durable.store import migrate as m
from durable.store.schema import dump, fresh_dump

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "sql").is_dir():
    ROOT = ROOT.parent


async def test_migrations_build_exactly_the_checked_in_schema(pg_dsn) -> None:
    """Apply every migration to an empty schema: the catalogs say what sql/schema.sql says
    (regenerate it with `python -m durable.store.schema DSN > sql/schema.sql` after adding a
    migration)."""
    got = await fresh_dump(pg_dsn)
    want = (ROOT / "sql" / "schema.sql").read_text()
    assert got == want, ("sql/schema.sql is not what the migrations build; regenerate it with "
                         "`python -m durable.store.schema DSN > sql/schema.sql` and review the diff")


async def test_a_migration_edited_after_it_was_applied_is_refused(db, monkeypatch) -> None:
    conn = await db.conn()
    await m.migrate(conn, db.schema)
    await m.check_schema(conn, db.schema)
    first = m._MIGRATIONS[0]
    edited = m.Migration(first.version, first.name, first.sql + "\n-- an edit\n")
    monkeypatch.setattr(m, "_MIGRATIONS", [edited, *m._MIGRATIONS[1:]])
    with pytest.raises(durable.SchemaVersionError) as err:
        await m.migrate(conn, db.schema)
    assert f"migration {first.filename} was changed after it was applied" in str(err.value)
    assert "new migration" in str(err.value)
    with pytest.raises(durable.SchemaVersionError):
        await m.check_schema(conn, db.schema)  # an engine with migrate=False refuses it too


async def test_schemas_migrated_before_checksums_get_them_recorded(db) -> None:
    conn = await db.conn()
    await m.migrate(conn, db.schema)
    await conn.execute(sql.SQL("UPDATE {}.durable_migrations SET checksum = NULL").format(sql.Identifier(db.schema)))
    await m.check_schema(conn, db.schema)  # nothing recorded: nothing to compare, accepted
    await m.migrate(conn, db.schema)
    cur = await conn.execute(sql.SQL("SELECT version, checksum FROM {}.durable_migrations ORDER BY version")
                             .format(sql.Identifier(db.schema)))
    assert {v: c for v, c in await cur.fetchall()} == {mig.version: mig.checksum for mig in m._MIGRATIONS}
    assert await dump(conn, db.schema)  # and it dumps
