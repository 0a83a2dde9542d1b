"""Helpers shared by every test tier (the one place for them):

* paths: ``ROOT`` (the repository), ``TESTS``, ``SUPPORT`` (this folder: dbharness, the
  wf_* workflow modules, worker_proc.py);
* polling: :func:`eventually` (a sync or async check, polled until truthy);
* reading the database: :func:`rows`, :func:`status_of`, :func:`events`, :func:`count`
  (each takes the test's database, a fresh connection per call, or an open connection);
  :func:`execute` (one statement on a fresh connection, committed);
* :func:`new_engine`: an Engine on the test's schema with fast polls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import durable
from durable.store.rows import in_tree, tree_key_of

SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
ROOT = TESTS.parent


# --- polling ---------------------------------------------------------------------------------


async def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, *,
                     what: str = "condition") -> Any:
    """Poll ``check()`` (sync or async) until it returns something truthy, and return that
    (a bounded wait, not a timing assertion); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# --- reading and writing the database --------------------------------------------------------


async def rows(src: Any, sql: str, *args: Any) -> list[tuple]:
    """All rows of one statement. ``src`` is an open (async) connection, or the test's
    database (``db``/``fresh_schema``: a fresh connection, closed afterwards)."""
    if hasattr(src, "execute"):
        return await (await src.execute(sql, args or None)).fetchall()
    c = await src.conn()
    try:
        return await (await c.execute(sql, args or None)).fetchall()
    finally:
        await c.close()


async def status_of(src: Any, run_id: Any) -> str | None:
    """A run's status (None if there is no such run); ``src`` as for :func:`rows`."""
    r = await rows(src, "SELECT status FROM durable_runs WHERE id = %s", run_id)
    return r[0][0] if r else None


async def events(src: Any, run_id: Any) -> list[tuple]:
    """(seq, pos, kind, name, data) of a run's journal; ``src`` as for :func:`rows`."""
    return await rows(src, "SELECT seq, pos, kind, name, data FROM durable_events WHERE run_id = %s ORDER BY seq",
                      run_id)


async def count(src: Any, table: str) -> int:
    """``SELECT count(*)`` of a table; ``src`` as for :func:`rows`."""
    return (await rows(src, f"SELECT count(*) FROM {table}"))[0][0]


async def execute(db: Any, sql: str, *args: Any) -> int:
    """Run one statement on a fresh connection; returns its row count."""
    c = await db.conn()
    try:
        cur = await c.execute(sql, args)
        await c.commit()
        return cur.rowcount
    finally:
        await c.close()


# --- engines ---------------------------------------------------------------------------------


def new_engine(db: Any, **kw: Any) -> durable.Engine:
    """An Engine on the test's schema with fast polls (the ``engine`` fixture's settings);
    keyword arguments override them."""
    opts: dict[str, Any] = dict(schema=db.schema, poll_interval_s=0.2, lease_ttl_s=5.0, sticky_grace_s=0.5)
    opts.update(kw)
    return durable.Engine(db.dsn, **opts)


# --- run ids ---------------------------------------------------------------------------------


def child_id(parent: Any, ident: str, root: Any = None) -> Any:
    """The id a parent gives its child for call-site ident ``ident`` ("site|key|K" or
    "site|#N"): uuid5 of the parent and the ident, in the tree of ``root`` (the parent
    itself when it is a root)."""
    return in_tree(root or parent, uuid.uuid5(parent, ident))


def tree_key(run_id: Any) -> int:
    """The tree key a run id carries (its tree's first 8 bytes)."""
    return tree_key_of(run_id)
