"""Listing and searching runs at 100k and 1M runs (issue 14): ``engine.list_runs`` /
``count_runs`` through the public API, on runs filled straight into the schema.

    python -m bench.search

One schema, filled set-based (INSERT ... SELECT generate_series, in chunks of 100,000)
first to BENCH_SMALL (100,000) runs, measured, then to BENCH_LARGE (1,000,000), measured;
VACUUM ANALYZE after each fill. The runs: one created per second going back, 5 workflows
in two families (orders.*, billing.*), 3 queues, 2 % failed, and on every 10th run the
search attributes {"customer": "c<i mod 5000>", "tier": ["gold"]}. Each figure is the
median of BENCH_REPEAT (15) calls, milliseconds:

- ``info_ms_*``: ``engine.info(run_id)`` of one run (the baseline: a read by primary key
  through the same pool, i.e. the round trip and the client's own cost);
- ``list_ms_*``: the newest page of 50 (no filter);
- ``list_filtered_ms_*``: a page of 50 of ``workflow='orders.*', status='failed'``;
- ``attr_search_ms_*``: a page of 50 of ``attributes={"customer": "c<k>"}`` (k varies);
- ``count_ms_*``: ``count_runs(queue='payments', created_after=<1 day ago>)`` (~29k runs
  match at 1M: a count over an index range);
- ``count_all_ms_*``: ``count_runs()`` (every run: an index-only scan of the whole index);
- ``count_attr_ms_*``: ``count_runs(attributes={"customer": "c<k>"})``.

The plans at the large size (EXPLAIN (ANALYZE, BUFFERS) of the three lists) are printed
as progress. Env: ``DURABLE_DSN``, ``BENCH_SMALL``, ``BENCH_LARGE``, ``BENCH_REPEAT``.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import durable
from durable.store import search as store_search
from durable.store.connections import connect
from durable.store.rows import RunFilter

from .common import bench_schema, progress, run

SMALL = int(os.environ.get("BENCH_SMALL", "100000"))
LARGE = int(os.environ.get("BENCH_LARGE", "1000000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
CHUNK = 100_000

# (the bench writes rows the way a migration's backfill would: straight into the table)
_FILL = """
INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input, error,
                          attributes, created_at, started_at, finished_at)
SELECT durable_tree_key(g), g, g, g,
       (ARRAY['orders.charge', 'orders.ship', 'orders.refund', 'billing.invoice', 'billing.dun'])[1 + i %% 5], 1,
       (ARRAY['default', 'payments', 'mail'])[1 + i %% 3],
       CASE WHEN i %% 50 = 7 THEN 'failed' ELSE 'completed' END, '1',
       CASE WHEN i %% 50 = 7 THEN '{"type": "Declined"}'::jsonb END,
       CASE WHEN i %% 10 = 0 THEN jsonb_build_object('customer', 'c' || (i %% 5000), 'tier', jsonb_build_array('gold'))
       END,
       now() - make_interval(secs => i), now() - make_interval(secs => i), now() - make_interval(secs => i - 2)
  FROM (SELECT gen_random_uuid() AS g, i FROM generate_series(%s::int, %s::int) i) s
"""


async def _fill(dsn: str, schema: str, have: int, want: int) -> None:
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        for lo in range(have + 1, want + 1, CHUNK):
            hi = min(want, lo + CHUNK - 1)
            t0 = time.perf_counter()
            await conn.execute(_FILL.encode(), (lo, hi))
            progress(f"filled runs {lo:,}..{hi:,} ({time.perf_counter() - t0:.1f} s)")
        await conn.execute(b"INSERT INTO durable_search_keys (key) VALUES ('customer'), ('tier') ON CONFLICT DO NOTHING")
        t0 = time.perf_counter()
        await conn.execute(b"VACUUM ANALYZE durable_runs")
        progress(f"VACUUM ANALYZE ({time.perf_counter() - t0:.1f} s)")
    finally:
        await conn.close()


async def _median_ms(fn: Callable[[int], Awaitable[Any]]) -> float:
    await fn(-1)  # warm
    times = []
    for i in range(REPEAT):
        t0 = time.perf_counter()
        await fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


async def _measure(engine: durable.Engine, size: int) -> dict[str, float]:
    day_ago = datetime.now(timezone.utc) - timedelta(days=1)
    out: dict[str, float] = {}

    newest = (await engine.list_runs(limit=1)).runs[0].id

    async def info(i: int) -> Any:  # the baseline: one run read by its id through the same pool
        return await engine.info(newest)

    async def plain(i: int) -> Any:
        page = await engine.list_runs(limit=50)
        assert len(page.runs) == 50
        return page

    async def filtered(i: int) -> Any:
        return await engine.list_runs(workflow="orders.*", status="failed", limit=50)

    async def attr(i: int) -> Any:
        page = await engine.list_runs(attributes={"customer": f"c{10 + (abs(i) * 370) % (min(5000, size) - 10)}"}, limit=50)
        assert page.runs
        return page

    async def count(i: int) -> Any:
        return await engine.count_runs(queue="payments", created_after=day_ago)

    async def count_all(i: int) -> Any:
        return await engine.count_runs()

    async def count_attr(i: int) -> Any:
        return await engine.count_runs(attributes={"customer": f"c{10 + (abs(i) * 410) % (min(5000, size) - 10)}"})

    tag = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}m"
    for name, fn in (("info_ms", info), ("list_ms", plain), ("list_filtered_ms", filtered), ("attr_search_ms", attr),
                     ("count_ms", count), ("count_all_ms", count_all), ("count_attr_ms", count_attr)):
        out[f"{name}_{tag}"] = await _median_ms(fn)
        progress(f"{size:,} runs: {name} = {out[f'{name}_{tag}']} ms")
    return out


async def _plans(dsn: str, schema: str) -> None:
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        for label, f in (("newest page", RunFilter()),
                         ("workflow='orders.*' status=failed", RunFilter(workflow="orders.*", statuses=("failed",))),
                         ("attributes customer=c120", RunFilter(attributes={"customer": "c120"}))):
            lines = await store_search.explain(conn, f, 50, "ANALYZE, BUFFERS")
            progress(f"plan of list_runs({label}) at {LARGE:,} runs:\n    " + "\n    ".join(lines))
    finally:
        await conn.close()


async def main() -> dict[str, Any]:
    figures: dict[str, Any] = {"small_runs": SMALL, "large_runs": LARGE}
    async with bench_schema("search") as (dsn, schema):
        async with durable.Engine(dsn, schema=schema, execute=False, metrics=False) as engine:
            await _fill(dsn, schema, 0, SMALL)
            figures.update(await _measure(engine, SMALL))
            await _fill(dsn, schema, SMALL, LARGE)
            figures.update(await _measure(engine, LARGE))
        await _plans(dsn, schema)
    return figures


if __name__ == "__main__":
    run(main)
