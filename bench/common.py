"""Helpers shared by every benchmark in bench/.

A bench is ``bench/NAME.py``, run as ``python -m bench.NAME`` from the repository root.
It reads ``DURABLE_DSN`` (embedded PostgreSQL when unset), works in its own fresh schema
(dropped at the end), prints progress lines as it goes and its figures as ONE JSON
object on the last line of stdout::

    from bench.common import bench_schema, finish, median_of, percentile, progress

    async def main() -> dict:
        async with bench_schema("mybench") as (dsn, schema):
            async with durable.Engine(dsn, schema=schema) as engine:
                ...
        return {"figure": 1.0}

    if __name__ == "__main__":
        run(main)
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, TypeVar

import psycopg
from psycopg import sql

from durable.store.connections import connect, masked, resolve_dsn as _resolve_dsn
from durable.store.migrate import migrate

T = TypeVar("T")

__all__ = [
    "StatementCounter", "bench_schema", "drop_schema", "finish", "make_schema", "median_of", "percentile",
    "progress", "resolve_dsn", "run", "timed",
]


async def resolve_dsn() -> str:
    """``DURABLE_DSN`` if set, else an embedded PostgreSQL (started on first use)."""
    return await _resolve_dsn(None)


async def make_schema(dsn: str, name: str) -> str:
    """Create and migrate a fresh schema ``bench_<name>_<hex>``; return its name."""
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        await migrate(conn, schema)
    finally:
        await conn.close()
    return schema


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await connect(dsn, schema="public", timeout=30)
    try:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    finally:
        await conn.close()


@asynccontextmanager
async def bench_schema(name: str) -> AsyncIterator[tuple[str, str]]:
    """``async with bench_schema("steps") as (dsn, schema):`` a migrated schema, dropped after."""
    dsn = await resolve_dsn()
    schema = await make_schema(dsn, name)
    progress(f"database {masked(dsn)}, schema {schema}")
    try:
        yield dsn, schema
    finally:
        await drop_schema(dsn, schema)


def progress(msg: str) -> None:
    """One progress line (stdout, flushed; the final JSON line comes after all of them)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def median_of(n: int, fn: Callable[[int], Awaitable[dict[str, float]]], *,
                    label: str = "run") -> dict[str, float]:
    """Call ``fn(i)`` ``n`` times (each returns figures by name) and return the median of
    every figure, printing each run's figures as progress."""
    runs: list[dict[str, float]] = []
    for i in range(n):
        figures = await fn(i)
        progress(f"{label} {i + 1}/{n}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
        runs.append(figures)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def timed(fn: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """(result, seconds) of awaiting ``fn()``."""
    t0 = time.perf_counter()
    out = await fn()
    return out, time.perf_counter() - t0


class StatementCounter:
    """Counts statements sent by this process's psycopg connections while active.

    durable's pooled connections are autocommit, so every statement is one transaction:
    the count is the number of commits the measured work cost (read-only ones included).
    ``by_sql`` keeps the count per statement's first line for a breakdown."""

    def __init__(self) -> None:
        self.total = 0
        self.by_sql: dict[str, int] = {}
        self._orig: Any = None

    def __enter__(self) -> "StatementCounter":
        orig = self._orig = psycopg.AsyncCursor.execute
        counter = self

        async def execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            counter.total += 1
            text = query.decode() if isinstance(query, bytes) else str(query)
            key = " ".join(text.split())[:60]
            counter.by_sql[key] = counter.by_sql.get(key, 0) + 1
            return await orig(cur, query, *args, **kwargs)

        psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        psycopg.AsyncCursor.execute = self._orig  # type: ignore[method-assign]


def finish(figures: dict[str, Any]) -> None:
    """Print the figures as one JSON object: the bench's last line of output."""
    print(json.dumps(figures, sort_keys=False), flush=True)


def run(main: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Entry point: run ``main()`` and print its figures as the final JSON line."""
    try:
        figures = asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
    finish(figures)
