"""Schema migrations: numbered SQL files applied once each, in order, per schema.

A migration is never edited once released: the runner records each file's checksum when
it applies it and refuses to work on a schema whose applied migrations differ from the
files (change the schema with a new migration instead). The files are ``NNNN_name.sql``. An installed wheel carries them as the package resource
``durable/_sql``; a source checkout reads the repository's top-level ``sql/`` folder.
Each file runs in its own transaction with ``search_path`` set to the target schema, so
the files never name the schema themselves and one database can hold many installs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import ConfigurationError, SchemaVersionError

__all__ = [
    "LATEST_VERSION",
    "Migration",
    "available_migrations",
    "check_schema",
    "migrate",
    "migrations_location",
    "schema_version",
]

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        """sha256 of the file's text (line endings normalised)."""
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()


def _migrations_dir() -> Traversable | Path:
    """The packaged ``durable/_sql`` resource if present (wheel), else ``<repo>/sql`` (checkout)."""
    try:
        packaged = resources.files("durable") / "_sql"
        if packaged.is_dir():
            return packaged
    except Exception:  # namespace package, zip without the folder, ...: try the checkout
        pass
    checkout = Path(__file__).resolve().parents[2] / "sql"
    if checkout.is_dir():
        return checkout
    raise ConfigurationError(
        "durable's migration files are missing: neither the package resource durable/_sql nor a "
        f"source checkout's sql/ folder ({checkout}) exists. Reinstall durable (pip install "
        "--force-reinstall durable)."
    )


def migrations_location() -> str:
    """Where the migration files are read from (for diagnostics)."""
    return str(_migrations_dir())


def _load() -> list[Migration]:
    found: dict[int, Migration] = {}
    for entry in _migrations_dir().iterdir():
        m = _FILE_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        version = int(m.group(1))
        if version in found:
            raise ConfigurationError(
                f"two migration files have version {version}: {found[version].name} and {m.group(2)}"
            )
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_MIGRATIONS: list[Migration] = _load()
LATEST_VERSION: int = _MIGRATIONS[-1].version if _MIGRATIONS else 0


def available_migrations() -> list[Migration]:
    """All migrations shipped with this code, sorted by version."""
    return list(_MIGRATIONS)


def _lock_key(schema: str) -> int:
    """A signed 64-bit advisory lock key per schema (stable across processes and versions)."""
    digest = hashlib.sha256(f"durable.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _too_new(schema: str, version: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"database schema {schema} is at version {version} but this durable knows up to "
        f"{LATEST_VERSION}: upgrade durable (pip install -U durable) or point at another schema"
    )


def _not_migrated(schema: str, version: int | None) -> SchemaVersionError:
    state = "is not migrated" if version is None else f"is at version {version}, this durable needs {LATEST_VERSION}"
    return SchemaVersionError(
        f"database schema {schema} {state}: run `durable migrate` or start the Engine with migrate=True"
    )


async def _applied(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[int, str | None]:
    """Applied versions and the checksums recorded for them (None: applied by a runner
    that recorded none)."""
    cur = await conn.execute(
        sql.SQL("SELECT version, checksum FROM {}.durable_migrations").format(sql.Identifier(schema))
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


def _changed(schema: str, mig: Migration, recorded: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"migration {mig.filename} was changed after it was applied to schema {schema} (recorded checksum "
        f"{recorded[:12]}…, the file's {mig.checksum[:12]}…). Migrations are never edited once released: "
        "restore the file as it was and put the change in a new migration")


async def _verify(conn: psycopg.AsyncConnection[Any], schema: str, applied: dict[int, str | None], *,
                  record: bool) -> None:
    """Refuse a schema whose applied migrations differ from the files; with ``record``,
    record the checksums of migrations applied before checksums were kept."""
    for mig in _MIGRATIONS:
        recorded = applied.get(mig.version, "")
        if recorded is None:
            if record:
                await conn.execute(sql.SQL("UPDATE {}.durable_migrations SET checksum = %s WHERE version = %s")
                                   .format(sql.Identifier(schema)), (mig.checksum, mig.version))
        elif recorded and recorded != mig.checksum:
            raise _changed(schema, mig, recorded)


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """Bring ``schema`` up to :data:`LATEST_VERSION`; return the version now applied.

    ``conn`` must be in autocommit mode: each step is its own transaction. Concurrent
    callers (other processes too) serialise on an advisory lock per schema and re-read
    the applied versions under it, so the later one sees the earlier one's work.
    """
    if not conn.autocommit:
        raise ConfigurationError("migrate() needs an autocommit connection (each migration is its own transaction)")
    if not _MIGRATIONS:
        _migrations_dir()  # raises with the reason if the folder is missing
        raise ConfigurationError(f"no migration files found in {migrations_location()}: reinstall durable")
    ident = sql.Identifier(schema)
    key = _lock_key(schema)

    # Setup under the lock: concurrent CREATE SCHEMA/TABLE IF NOT EXISTS can otherwise
    # both fail on the catalog's unique index.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.durable_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        await conn.execute(sql.SQL("ALTER TABLE {}.durable_migrations ADD COLUMN IF NOT EXISTS checksum text")
                           .format(ident))
        applied = await _applied(conn, schema)
        if applied and max(applied) > LATEST_VERSION:
            raise _too_new(schema, max(applied))
        await _verify(conn, schema, applied, record=True)

    for mig in _MIGRATIONS:
        if mig.version in applied:
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            applied = await _applied(conn, schema)
            if applied and max(applied) > LATEST_VERSION:
                raise _too_new(schema, max(applied))
            if mig.version in applied:
                continue  # another process applied it meanwhile
            await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
            try:
                # No parameters: sent as a simple query, so one file may hold many statements.
                await conn.execute(mig.sql.encode())
            except psycopg.Error as exc:
                raise SchemaVersionError(
                    f"migration {mig.version:04d}_{mig.name}.sql failed on schema {schema}: "
                    f"{type(exc).__name__}: {exc}. Nothing of this migration was applied."
                ) from exc
            await conn.execute(
                sql.SQL("INSERT INTO {}.durable_migrations (version, name, checksum) VALUES (%s, %s, %s)")
                .format(ident),
                (mig.version, mig.name, mig.checksum),
            )
        applied[mig.version] = mig.checksum
        logger.info("schema %s: applied migration %04d_%s", schema, mig.version, mig.name)
    await distribute(conn, schema)
    return max(applied)


# On Citus every table of a tree is distributed by tree_key and co-located with the runs
# (whole trees on one shard); the id map is a reference table (read by run id anywhere,
# written only for trees made before version 7); the process table is distributed by
# process, so that a heartbeat writes to one shard and commits in one phase (a write to a
# reference table goes to every node, in two); durable_migrations stays on the coordinator.
# The workflow registry (durable_workflows) is a reference table: written rarely (when a
# process opens with changed definitions), read by name from any node.
CITUS_DISTRIBUTED = ("durable_runs", "durable_events", "durable_signals", "durable_waiters", "durable_due",
                     "durable_deadlines", "durable_outcomes")
CITUS_BY_OWNER = ("durable_workers",)
CITUS_REFERENCE = ("durable_run_keys", "durable_workflows", "durable_search_keys")
# Tables left on the coordinator as plain local tables (neither distributed nor replicated):
# schedules are few, read and written only by dispatchers and operators, and a write to a
# reference table would commit on every node in two phases (sql/0011_schedules.sql).
CITUS_COORDINATOR = ("durable_schedules",)


async def is_citus(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the database runs Citus (the extension is installed in it)."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return await cur.fetchone() is not None


async def distribute(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """On Citus, distribute the schema's tables by tree (idempotent); returns what it
    distributed now. On plain PostgreSQL it does nothing."""
    if not await is_citus(conn):
        return []
    done: list[str] = []
    key = _lock_key(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        cur = await conn.execute(
            "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s", (schema,))
        already = {r[0] for r in await cur.fetchall()}
        for table in CITUS_DISTRIBUTED:
            if table not in already:
                colocate = "none" if table == "durable_runs" else f"{schema}.durable_runs"
                await conn.execute("SELECT create_distributed_table(%s, 'tree_key', colocate_with => %s)",
                                   (f"{schema}.{table}", colocate))
                done.append(table)
        for table in CITUS_BY_OWNER:
            if table not in already:
                await conn.execute("SELECT create_distributed_table(%s, 'owner', colocate_with => 'none')",
                                   (f"{schema}.{table}",))
                done.append(table)
        for table in CITUS_REFERENCE:
            if table not in already:
                await conn.execute("SELECT create_reference_table(%s)", (f"{schema}.{table}",))
                done.append(table)
    if done:
        logger.info("schema %s: distributed by tree on Citus: %s", schema, ", ".join(done))
    return done


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int | None:
    """The highest migration applied to ``schema``, or None when it was never migrated."""
    cur = await conn.execute(
        "SELECT to_regclass(format('%%I.durable_migrations', %s::text)) IS NOT NULL", (schema,)
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute(
        sql.SQL("SELECT max(version) FROM {}.durable_migrations").format(sql.Identifier(schema))
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def check_schema(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """Return the schema's version if it matches this code; else raise SchemaVersionError
    (not migrated, behind, newer than this code, or migrated with files that were edited)."""
    version = await schema_version(conn, schema)
    if version is None or version < LATEST_VERSION:
        raise _not_migrated(schema, version)
    if version > LATEST_VERSION:
        raise _too_new(schema, version)
    cur = await conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                             "AND table_name = 'durable_migrations' AND column_name = 'checksum'", (schema,))
    if await cur.fetchone() is not None:
        await _verify(conn, schema, await _applied(conn, schema), record=False)
    return version
