"""The schema as the migrations leave it, dumped as SQL from the catalogs.

``sql/schema.sql`` in the repository is this dump of a freshly migrated schema: one
readable page of every table, index, function and trigger the engine has (the migrations
say how it got there). A test migrates an empty schema and compares; regenerate the file
after adding a migration with ``python -m durable.store.schema DSN > sql/schema.sql``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid

from psycopg import sql

from .connections import Conn, connect
from .migrate import migrate

HEADER = """-- The durable schema as its migrations (sql/NNNN_*.sql) leave it: a dump of the catalogs
-- of a freshly migrated schema, schema name left out. Generated; do not edit. After adding a
-- migration: python -m durable.store.schema postgresql://... > sql/schema.sql
"""


async def dump(conn: Conn, schema: str) -> str:
    """Tables (columns, constraints), indexes, sequences, functions and triggers of
    ``schema``, as SQL text in a stable order."""
    out = [HEADER]

    async def rows(query: str) -> list[tuple[object, ...]]:
        return list(await (await conn.execute(query, {"s": schema})).fetchall())

    for (name,) in await rows("SELECT sequence_name FROM information_schema.sequences "
                              "WHERE sequence_schema = %(s)s ORDER BY 1"):
        out.append(f"CREATE SEQUENCE {name};\n")
    tables = await rows("SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %(s)s AND c.relkind = 'r' ORDER BY c.relname")
    for oid, table in tables:
        cols = await (await conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,))).fetchall()
        lines = [f"    {c[0]} {c[1]}" + (" NOT NULL" if c[2] else "") + (f" DEFAULT {c[3]}" if c[3] else "")
                 for c in cols]
        cons = await (await conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s ORDER BY conname",
            (oid,))).fetchall()
        lines += [f"    CONSTRAINT {c[0]} {c[1]}" for c in cons]
        reloptions = await (await conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s", (oid,))).fetchone()
        with_ = f" WITH ({', '.join(reloptions[0])})" if reloptions and reloptions[0] else ""
        out.append(f"CREATE TABLE {table} (\n" + ",\n".join(lines) + f"\n){with_};\n")
    for (indexdef,) in await rows("SELECT indexdef FROM pg_indexes WHERE schemaname = %(s)s "
                                  "ORDER BY tablename, indexname"):
        out.append(f"{indexdef};\n")
    for (fdef,) in await rows("SELECT pg_get_functiondef(p.oid) FROM pg_proc p "
                              "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s "
                              "ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)"):
        out.append(f"{str(fdef).rstrip()};\n")
    for (tdef,) in await rows("SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                              "JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = %(s)s AND NOT t.tgisinternal ORDER BY c.relname, t.tgname"):
        out.append(f"{tdef};\n")
    text = "\n".join(out)
    # the schema's name is the install's, not the schema's: leave it out
    ident = re.escape(schema)
    text = re.sub(rf'(?<![\w"])"?{ident}"?\.', "", text)
    return text.replace(f"durable_wake_{schema}", "durable_wake_<schema>")


async def fresh_dump(dsn: str) -> str:
    """Migrate a new empty schema, dump it, drop it."""
    schema = f"dump_{uuid.uuid4().hex[:12]}"
    conn = await connect(dsn, schema=schema, timeout=10)
    try:
        await migrate(conn, schema)
        return await dump(conn, schema)
    finally:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        await conn.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m durable.store.schema DSN > sql/schema.sql", file=sys.stderr)
        raise SystemExit(2)
    sys.stdout.write(asyncio.run(fresh_dump(sys.argv[1])))
