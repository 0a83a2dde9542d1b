"""The web console on a big database (issue 16): its pages' latency and the cost of idle
live pages, against a real ``durable ui`` process.

    python -m bench.ui

One schema, filled set-based (INSERT ... SELECT generate_series, chunks of 100,000) with
BENCH_RUNS (1,000,000) finished root runs of 5 workflows over 3 queues (one created per
second going back, 2 % failed with an error, one journal event each), VACUUM ANALYZE'd;
then a root run with BENCH_CHILDREN (10,000) children started through the engine (one
``start_children``; the children sit pending on a queue nobody serves, so the tree stays
as it is while it is measured). ``durable ui`` serves the console as a subprocess (loopback,
no token). Figures, medians of BENCH_REPEAT (15) GETs over HTTP (one keep-alive client),
milliseconds:

- ``runs_page_ms``: ``/``, the runs page (the newest 50 and the counts by status);
- ``run_page_ms``: ``/runs/<id>`` of one of the 1M runs (its history and its tree);
- ``tree_10k_ms``: ``/runs/<root>`` of the root with 10,000 children (timeline and tree);
- ``runs_filtered_ms``: ``/?workflow=orders.*&status=failed``;
- ``engine_wf_per_s_watched`` / ``engine_wf_per_s_unwatched`` / ``engine_watched_ratio``:
  one-step workflows per second through an executing engine in the bench process
  (BENCH_LOOPS (32) loops of start -> result, BENCH_WF_N (2,000) runs) while the 100 pages
  below watch and while none does (the hub then holds no connection: the engine's own
  statements are never changed), alternated BENCH_ROUNDS (3) times, medians;
- ``hub_look_ms``: one look of the hub (runs created in the last 3 s, then 50 pinned runs
  as they are now: 25 roots, 25 children of the 10,000-child tree), median of BENCH_REPEAT; the plans are printed as progress;
- ``sse_clients_100_cpu_pct``: 100 open live pages (``/events``: 50 runs pages, 50 run
  pages each pinning a different run), idle for BENCH_IDLE_S (20) seconds after a settling
  period: the ``durable ui`` process's CPU (user + system, from /proc) ÷ wall time × 100;
  ``sse_idle_db_statements_per_s``: the statements its hub sent meanwhile (its
  connection's ``query_start`` changes, sampled every 20 ms: at most 2 per look, 1 look a
  second).

Targets: each page ≤ 200 ms. Env: ``DURABLE_DSN``, ``BENCH_RUNS``, ``BENCH_CHILDREN``,
``BENCH_REPEAT``, ``BENCH_IDLE_S``, ``BENCH_CLIENTS`` (100), ``BENCH_WF_N``, ``BENCH_LOOPS``,
``BENCH_ROUNDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uuid
from datetime import timedelta

import httpx

import durable
from durable.store import live as store_live
from durable.store.connections import connect
from durable.store.statements import q

from .common import bench_schema, progress, run

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
CHILDREN = int(os.environ.get("BENCH_CHILDREN", "10000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "20"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "100"))
WF_N = int(os.environ.get("BENCH_WF_N", "2000"))
LOOPS = int(os.environ.get("BENCH_LOOPS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CHUNK = 100_000
NOBODY = "bench-ui-unserved"

_FILL = """
WITH g AS (
    SELECT gen_random_uuid() AS id, i FROM generate_series(%s::int, %s::int) i
), runs AS (
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input, result,
                              error, attempt, lease_epoch, created_at, started_at, finished_at)
    SELECT durable_tree_key(id), id, id, id,
           (ARRAY['orders.charge', 'orders.ship', 'orders.refund', 'billing.invoice', 'billing.dun'])[1 + i %% 5], 1,
           (ARRAY['default', 'payments', 'mail'])[1 + i %% 3],
           CASE WHEN i %% 50 = 7 THEN 'failed' ELSE 'completed' END, '{"order": 1}',
           CASE WHEN i %% 50 = 7 THEN NULL ELSE '{"ok": true}'::jsonb END,
           CASE WHEN i %% 50 = 7 THEN '{"type": "Declined", "message": "card declined"}'::jsonb END, 1, 1,
           now() - make_interval(secs => i), now() - make_interval(secs => i), now() - make_interval(secs => i - 2)
      FROM g
    RETURNING tree_key, id, finished_at
)
INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, kind, name, data, created_at)
SELECT tree_key, id, 1, id, 0, 'step_completed', 'bench.ui.step', '{"result": 1, "attempt": 1}', finished_at
  FROM runs
"""


@durable.workflow("bench.ui.leaf")
async def ui_leaf(ctx: durable.Context, n: int) -> int:
    return n


@durable.workflow("bench.ui.fanout")
async def ui_fanout(ctx: durable.Context, n: int) -> int:
    refs = await ctx.start_children(ui_leaf, range(n), key=str, queue=NOBODY)
    return sum(await ctx.gather(refs))


async def _fill(dsn: str, schema: str) -> None:
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        for lo in range(1, RUNS + 1, CHUNK):
            hi = min(RUNS, lo + CHUNK - 1)
            t0 = time.perf_counter()
            await conn.execute(_FILL.encode(), (lo, hi))
            progress(f"filled runs {lo:,}..{hi:,} ({time.perf_counter() - t0:.1f} s)")
        t0 = time.perf_counter()
        await conn.execute(b"VACUUM ANALYZE durable_runs, durable_events")
        progress(f"VACUUM ANALYZE ({time.perf_counter() - t0:.1f} s)")
    finally:
        await conn.close()


async def _tree(dsn: str, schema: str) -> str:
    async with durable.Engine(dsn, schema=schema, migrate=False) as engine:
        t0 = time.perf_counter()
        h = await engine.start(ui_fanout, CHILDREN)
        while await engine.count_runs(root=h.run_id) < CHILDREN + 1 or await h.status() != "suspended":
            await asyncio.sleep(0.2)
        progress(f"a root with {CHILDREN:,} children in {time.perf_counter() - t0:.1f} s")
        return str(h.run_id)


def _serve(dsn: str, schema: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_UI_TOKEN"}
    p = subprocess.Popen([sys.executable, "-m", "durable.cli", "ui", "--dsn", dsn, "--schema", schema,
                          "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline() if p.stdout else ""
    if "http://" not in line:
        p.kill()
        raise RuntimeError(f"durable ui did not start: {line!r}")
    return p, line.split(": ", 1)[1].strip().rstrip("/")


async def _median_ms(http: httpx.AsyncClient, url: str) -> float:
    r = await http.get(url)  # warm
    r.raise_for_status()
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        r = await http.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return round(statistics.median(times), 1)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _hold(http: httpx.AsyncClient, url: str, opened: list[int]) -> None:
    try:
        async with http.stream("GET", url) as resp:
            opened.append(resp.status_code)
            async for _ in resp.aiter_raw():
                pass
    except (httpx.HTTPError, asyncio.CancelledError):
        pass


def _client_ports(pid: int) -> list[int]:
    """The local TCP ports of a process's sockets (its database connections among them)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    if parts[9] in inodes:
                        ports.append(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


@contextlib.asynccontextmanager
async def _watchers(base: str, runs: list[str]) -> AsyncIterator[None]:
    """CLIENTS open live pages (half runs pages, half run pages pinning a run each), settled."""
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as sse:
        opened: list[int] = []
        urls = [f"{base}/events" if i % 2 == 0 else f"{base}/events?run={runs[i % len(runs)]}"
                for i in range(CLIENTS)]
        tasks = [asyncio.create_task(_hold(sse, u, opened)) for u in urls]
        try:
            while len(opened) < CLIENTS:
                await asyncio.sleep(0.1)
            if any(code != 200 for code in opened):
                raise RuntimeError(f"event streams refused: {sorted(set(opened))}")
            await asyncio.sleep(3)  # settle: the hub's first looks, the hellos
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _statements_per_s(dsn: str, schema: str, pid: int, seconds: float) -> float:
    """Statements the console process's database connections started (pg_stat_activity's
    query_start per backend, sampled every 20 ms)."""
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        seen: set[tuple[int, Any]] = set()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            cur = await conn.execute("SELECT pid, query_start FROM pg_stat_activity WHERE client_port = ANY(%s) "
                                     "AND query_start IS NOT NULL", (_client_ports(pid),))
            seen.update((r[0], r[1]) for r in await cur.fetchall())
            await asyncio.sleep(0.02)
        return round(len(seen) / seconds, 2)
    finally:
        await conn.close()


async def _look_ms(dsn: str, schema: str, pinned: list[str]) -> float:
    """One look of the hub, as it runs them (runs created in the last second, then the
    pinned runs as they are now), median of BENCH_REPEAT, with the plans printed once."""
    conn = await connect(dsn, schema=schema, timeout=30)
    try:
        since = await store_live.clock(conn) - timedelta(seconds=3)
        ids = [uuid.UUID(i) for i in pinned]
        for name, params in (("live_runs_since", {"since": since, "limit": 500}),
                             ("live_runs_now", {"keys": [store_live.tree_key_of(i) for i in ids], "ids": ids})):
            cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + q(name).encode(), params)
            progress(f"plan of {name}:\n" + "\n".join(r[0] for r in await cur.fetchall()))
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            await store_live.created_since(conn, since, 500)
            await store_live.runs_now(conn, ids)
            times.append((time.perf_counter() - t0) * 1000)
        return round(statistics.median(times), 2)
    finally:
        await conn.close()


async def _throughput(dsn: str, schema: str, n: int) -> float:
    """One-step workflows per second through an executing engine in this process
    (BENCH_LOOPS loops of start -> result)."""
    async with durable.Engine(dsn, schema=schema, migrate=False) as engine:
        await asyncio.gather(*(engine.run(ui_leaf, i, timeout=60) for i in range(50)))  # warm
        left = n

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await engine.run(ui_leaf, left, timeout=60)
        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(LOOPS)))
        return n / (time.perf_counter() - t0)


async def main() -> dict[str, Any]:
    t_start = time.perf_counter()
    figures: dict[str, Any] = {}
    async with bench_schema("ui") as (dsn, schema):
        await _fill(dsn, schema)
        root = await _tree(dsn, schema)
        conn = await connect(dsn, schema=schema, timeout=30)
        try:
            cur = await conn.execute("SELECT id FROM durable_runs WHERE parent_id IS NULL AND workflow = "
                                     "'orders.refund' ORDER BY created_at DESC LIMIT %s", (CLIENTS,))
            some = [str(r[0]) for r in await cur.fetchall()]
            cur = await conn.execute("SELECT id FROM durable_runs WHERE tree_key = %s AND parent_id = %s LIMIT 25",
                                     (store_live.tree_key_of(uuid.UUID(root)), uuid.UUID(root)))
            children = [str(r[0]) for r in await cur.fetchall()]
        finally:
            await conn.close()
        proc, base = _serve(dsn, schema)
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                figures["runs_page_ms"] = await _median_ms(http, f"{base}/")
                figures["run_page_ms"] = await _median_ms(http, f"{base}/runs/{some[0]}")
                figures["tree_10k_ms"] = await _median_ms(http, f"{base}/runs/{root}")
                figures["runs_filtered_ms"] = await _median_ms(http, f"{base}/?workflow=orders.*&status=failed")
                figures["runs_fragment_ms"] = await _median_ms(http, f"{base}/?fragment=main")
                progress(f"pages: {figures}")
            # 100 idle live pages: the server's CPU and its statements
            async with _watchers(base, some) as _:
                cpu0, t0 = _cpu_s(proc.pid), time.perf_counter()
                statements = await _statements_per_s(dsn, schema, proc.pid, IDLE_S)
                cpu1, t1 = _cpu_s(proc.pid), time.perf_counter()
            figures["sse_clients_100_cpu_pct"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 2)
            figures["sse_idle_db_statements_per_s"] = statements
            figures["sse_clients"] = CLIENTS
            # the engine's throughput while the 100 pages watch (the hub LISTENs and looks once a
            # second under load) and while none does (the hub holds no connection), alternated
            watched: list[float] = []
            unwatched: list[float] = []
            for _ in range(ROUNDS):
                await asyncio.sleep(12)  # the hub closes its connection 10 s after the last page left
                unwatched.append(await _throughput(dsn, schema, WF_N))
                async with _watchers(base, some) as _:
                    watched.append(await _throughput(dsn, schema, WF_N))
            progress(f"engine wf/s watched {[round(x) for x in watched]}, unwatched {[round(x) for x in unwatched]}")
            figures["engine_wf_per_s_watched"] = round(statistics.median(watched), 1)
            figures["engine_wf_per_s_unwatched"] = round(statistics.median(unwatched), 1)
            figures["engine_watched_ratio"] = round(figures["engine_wf_per_s_watched"]
                                                    / figures["engine_wf_per_s_unwatched"], 3)
            figures["hub_look_ms"] = await _look_ms(dsn, schema, some[:25] + children)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    keys = ("runs_page_ms", "run_page_ms", "tree_10k_ms", "sse_clients_100_cpu_pct")
    figures = {**{k: figures[k] for k in keys}, **figures}
    figures.update(runs=RUNS, children=CHILDREN, repeat=REPEAT, idle_s=IDLE_S, rounds=ROUNDS,
                   seconds=round(time.perf_counter() - t_start, 1))
    return figures


if __name__ == "__main__":
    run(main)
