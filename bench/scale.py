"""Costs as the tables grow (issue 11): throughput, claims, backlog drain, fan-in under a
long writer, HOT updates and retention, with big tables filled straight into the schema.

    python -m bench.scale

Two schemas: ``empty`` (nothing in it) and ``big``: BENCH_FINISHED (1,000,000) finished
one-step root runs (each with its journal event, finished 2-30 days ago) and BENCH_WAITING
(100,000) runs suspended waiting for an event (each with a queue row, due_at NULL), filled
set-based (INSERT ... SELECT generate_series), then VACUUM ANALYZE'd once. Pending backlogs
are inserted later the way a start writes them (a pending run plus its due queue row) and
are never analyzed. Everything measured runs the engine's own code:

1. ``throughput_ratio_1m``: one-step workflows through the whole path (a client engine
   starts them as pending runs and awaits the results; a worker engine in this process
   claims, executes and finishes them): BENCH_CLIENTS (64) loops of start -> result,
   BENCH_N (2,000) runs per round after a warm-up of 200; wf/s in ``big`` ÷ in ``empty``,
   alternated BENCH_ROUNDS (3) times, medians (target ≥ 0.85).
2. ``hot_update_pct``: n_tup_hot_upd / n_tup_upd × 100 of durable_runs over those rounds,
   both schemas (target ≥ 50; ``hot_update_pct_1m``: the big schema's rounds only;
   ``hot_update_pct_due``: durable_due), from pg_stat_user_tables read once the engines'
   connections are closed (a backend flushes its counters when it exits) and the figures
   stopped moving. The drain and the fan-in report theirs too (``hot_update_pct_drain``,
   ``hot_update_pct_fanin``, ``hot_update_pct_fanin_long_writer``).
3. ``claim_ms_1k_backlog`` / ``claim_ms_20k_backlog`` / ``claim_ms_100k_backlog``: one claim
   of 50 as the claimer does it (``claimable`` with its window of 2 × 50 + 8, then
   ``claim`` of 50), in a rolled-back transaction, median of 15, with a pending backlog of
   1,000 / 20,000 / BENCH_BACKLOG (100,000) in ``big``; the plans of the claimable read at
   the largest backlog (auto_explain, EXPLAIN ANALYZE BUFFERS of the nested statements) are
   printed as progress.
4. ``backlog_drain_ratio_100k``: one worker engine (default settings) opened on a backlog
   of 1,000 pending one-step runs (3 times, median) and on the BENCH_BACKLOG one left by
   the claims; runs completed per second from the first completion to the last (the big
   one for at most BENCH_DRAIN_S (180) seconds, then the rest is deleted); the big rate ÷
   the small (target ≥ 0.8). ``drain_measured_runs`` = how many the big rate counts.
5. ``fanin_long_writer_ratio_50k``: a parent (in ``empty``) starts BENCH_FANIN_N (50,000)
   one-step children in one transaction and gathers them, all in one engine; per-child
   cost (start of the parent -> its result, ÷ children) while another connection holds a
   transaction with an xid open (``SELECT pg_current_xact_id()``, held across the run) ÷
   without (VACUUM in between) (target ≤ 1.2). ``fanin_children`` = the size used.
6. ``gc_runs_per_s_1m``: the retention round of an engine (``engine.retention.collect()``,
   what the background loop calls: batches of 500, 200 per round) called back to back over
   the BENCH_FINISHED old runs of ``big`` while the same engine claims and executes
   one-step runs from a pending backlog of 20,000 kept topped up; runs deleted per second
   (target ≥ 3,000 while claims go on), for at most BENCH_GC_S (600) seconds.
   ``gc_claims_wf_per_s`` = the runs the engine completed per second meanwhile.

Env: ``DURABLE_DSN``, ``BENCH_FINISHED`` (1000000), ``BENCH_WAITING`` (100000),
``BENCH_BACKLOG`` (100000), ``BENCH_DRAIN_S`` (180), ``BENCH_N`` (2000), ``BENCH_CLIENTS``
(64), ``BENCH_ROUNDS`` (3), ``BENCH_FANIN_N`` (50000), ``BENCH_GC_S`` (600),
``BENCH_GC_BACKLOG`` (20000), ``BENCH_PHASES`` (``throughput,claims,fanin,gc``, a comma list
to run only some). The JSON keys keep their names whatever the sizes (``finished_runs``,
``waiting_runs``, ``backlog``, ``fanin_children`` say which were used).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any, Self

import psycopg

import durable
from bench.common import drop_schema, make_schema, progress, resolve_dsn, run
from durable.observe import hooks
from durable.store import runs as store_runs
from durable.store.connections import connect

FINISHED = int(os.environ.get("BENCH_FINISHED", "1000000"))
WAITING = int(os.environ.get("BENCH_WAITING", "100000"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "100000"))
N = int(os.environ.get("BENCH_N", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
FANIN_N = int(os.environ.get("BENCH_FANIN_N", "50000"))
GC_S = float(os.environ.get("BENCH_GC_S", "600"))
GC_BACKLOG = int(os.environ.get("BENCH_GC_BACKLOG", "20000"))
DRAIN_S = float(os.environ.get("BENCH_DRAIN_S", "180"))
PHASES = set(os.environ.get("BENCH_PHASES", "throughput,claims,fanin,gc").split(","))
SMALL = 1000
MID = 20000
WARMUP = 200
CLAIM_LIMIT = 50
WORKFLOW = "bench.scale.one"
RETENTION_S = 86400.0  # the finished runs of the fill are 2-30 days old, the measured ones are new


@durable.step("bench.scale.noop")
async def scale_noop(n: int) -> int:
    return n


@durable.workflow(WORKFLOW)
async def scale_one(ctx: durable.Context, n: int) -> int:
    return await ctx.step(scale_noop, n)


@durable.workflow("bench.scale.fanin")
async def scale_fanin(ctx: durable.Context, n: int) -> int:
    refs = await ctx.start_children(scale_one, range(n))
    return sum(await ctx.gather(refs))


# --- filling -------------------------------------------------------------------------------

# Finished root runs of a one-step workflow as the engine leaves them (one step event each),
# finished at distinct times 2-30 days ago (the retention index walks them by finished_at).
FILL_FINISHED = """
WITH g AS (
    SELECT gen_random_uuid() AS id, now() - interval '2 days' - random() * interval '28 days' AS fin
      FROM generate_series(1, %(n)s)
), runs AS (
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input, result,
                              lease_epoch, created_at, started_at, finished_at)
    SELECT durable_tree_key(id), id, id, id, 'bench.scale.one', 1, 'default', 'completed', '1', '1', 1,
           fin - interval '5 ms', fin - interval '5 ms', fin
      FROM g
    RETURNING tree_key, id, finished_at
)
INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, kind, name, data, created_at)
SELECT tree_key, id, 1, id, 0, 'step_completed', 'bench.scale.noop', '{"result": 1, "attempt": 1}', finished_at
  FROM runs
"""

# Runs suspended until an event (a signal, a child): a step journaled, a queue row due never.
FILL_WAITING = """
WITH runs AS (
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                              lease_epoch, created_at, started_at)
    SELECT durable_tree_key(g), g, g, g, 'bench.scale.wait', 1, 'default', 'suspended', '1', 1,
           now() - interval '1 hour', now() - interval '1 hour'
      FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, %(n)s)) s
    RETURNING tree_key, id
), due AS (
    INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at, owner, leased)
    SELECT tree_key, id, 'default', 'bench.scale.wait:1', NULL, NULL, false FROM runs
    RETURNING 1
)
INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, kind, name, data)
SELECT tree_key, id, 1, id, 0, 'step_completed', 'bench.scale.noop', '{"result": 1, "attempt": 1}' FROM runs
"""

# Pending runs as durable_start_run writes them (not leased: a run and its due queue row),
# due within the last minute, and the notification a start sends.
FILL_PENDING = """
WITH runs AS (
    INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                              next_wakeup_at)
    SELECT durable_tree_key(g), g, g, g, %(workflow)s, 1, 'default', 'pending', '1',
           now() - interval '1 minute' * random()
      FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, %(n)s)) s
    RETURNING tree_key, id, next_wakeup_at
), due AS (
    INSERT INTO durable_due (tree_key, run_id, queue, workflow, due_at, owner, leased)
    SELECT tree_key, id, 'default', %(workflow)s || ':1', next_wakeup_at, NULL, false FROM runs
    RETURNING 1
)
SELECT count(*), pg_notify(durable_channel(), 'new|default') FROM due
"""

TABLES = ("durable_runs", "durable_events", "durable_due", "durable_outcomes", "durable_deadlines",
          "durable_signals", "durable_waiters")


async def fill(conn: Any, sql: str, n: int, what: str, chunk: int = 250_000) -> None:
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        await conn.execute(sql, {"n": k})
        done += k
        progress(f"  {what}: {done}/{n} ({time.perf_counter() - t0:.1f} s)")


async def add_pending(conn: Any, n: int) -> None:
    await conn.execute(FILL_PENDING, {"workflow": WORKFLOW, "n": n})


async def vacuum(conn: Any, analyze: bool = False) -> None:
    t0 = time.perf_counter()
    await conn.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{', '.join(TABLES)}")
    progress(f"  VACUUM{' ANALYZE' if analyze else ''} in {time.perf_counter() - t0:.1f} s")


async def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    row = await (await conn.execute(sql, params)).fetchone()
    return row[0]


# --- table statistics ----------------------------------------------------------------------

async def table_stats(conn: Any, schema: str) -> dict[str, tuple[int, int]]:
    """(n_tup_upd, n_tup_hot_upd) per table, once the figures stop moving: backends flush
    their counters at the latest when they exit (the engines' pools are closed by then)."""
    last: dict[str, tuple[int, int]] | None = None
    for _ in range(40):
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute("SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                 "WHERE schemaname = %s", (schema,))
        now = {r[0]: (int(r[1]), int(r[2])) for r in await cur.fetchall()}
        if now == last:
            return now
        last = now
        await asyncio.sleep(0.3)
    return last or {}


def stats_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    return {t: [after[t][0] - before.get(t, (0, 0))[0], after[t][1] - before.get(t, (0, 0))[1]] for t in after}


def add_delta(total: dict[str, list[int]], d: dict[str, list[int]]) -> None:
    for t, (upd, hot) in d.items():
        acc = total.setdefault(t, [0, 0])
        acc[0] += upd
        acc[1] += hot


def hot_pct(d: dict[str, list[int]], table: str) -> float | None:
    upd, hot = d.get(table, [0, 0])
    return round(hot / upd * 100, 1) if upd else None


# --- completions counted in this process (no database cost) --------------------------------

class Completions:
    """Times of ``run.completed`` of WORKFLOW in this process while active."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.target = 0
        self.reached = asyncio.Event()
        self._detach: Any = None

    def __enter__(self) -> Self:
        def on_completed(ev: Any) -> None:
            if ev.get("workflow") == WORKFLOW:
                self.times.append(time.perf_counter())
                if self.target and len(self.times) >= self.target:
                    self.reached.set()

        self._detach = hooks.on("run.completed", on_completed)
        return self

    def __exit__(self, *exc: object) -> None:
        self._detach()

    async def wait(self, n: int, timeout: float) -> None:
        self.target = n
        if len(self.times) >= n:
            return
        self.reached.clear()
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"only {len(self.times)}/{n} runs completed after {timeout:.0f} s") from None


# --- 1. throughput and HOT updates ---------------------------------------------------------

async def load(client: durable.Engine, n: int, clients: int) -> float:
    """Seconds for ``n`` one-step workflows, ``clients`` loops of start -> result at once."""
    todo = iter(range(n))

    async def loop() -> None:
        for i in todo:
            h = await client.start(scale_one, i)
            got = await h.result(timeout=120)
            assert got == i, (got, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return time.perf_counter() - t0


async def throughput_round(dsn: str, schema: str, stats_conn: Any) -> tuple[float, dict[str, list[int]]]:
    before = await table_stats(stats_conn, schema)
    async with durable.Engine(dsn, schema=schema, metrics=False), \
            durable.Engine(dsn, schema=schema, metrics=False, execute=False) as client:
        await load(client, WARMUP, CLIENTS)
        s = await load(client, N, CLIENTS)
    after = await table_stats(stats_conn, schema)
    return N / s, stats_delta(before, after)


async def phase_throughput(dsn: str, empty: str, big: str, conns: dict[str, Any], figures: dict[str, Any]) -> None:
    progress(f"throughput: {CLIENTS} clients x start -> result, {N} one-step runs per round "
             f"(+{WARMUP} warm-up), empty vs big, {ROUNDS} rounds")
    rates: dict[str, list[float]] = {empty: [], big: []}
    deltas: dict[str, dict[str, list[int]]] = {empty: {}, big: {}}
    for r in range(ROUNDS):
        for schema in (empty, big):
            rate, d = await throughput_round(dsn, schema, conns[schema])
            rates[schema].append(rate)
            add_delta(deltas[schema], d)
            progress(f"  round {r + 1} {'empty' if schema == empty else 'big'}: {rate:.0f} wf/s; durable_runs "
                     f"{d['durable_runs'][0]} updates, {d['durable_runs'][1]} HOT; durable_due "
                     f"{d['durable_due'][0]} updates, {d['durable_due'][1]} HOT")
    e, b = statistics.median(rates[empty]), statistics.median(rates[big])
    figures["throughput_ratio_1m"] = round(b / e, 3)
    figures["wf_per_s_empty"] = round(e, 1)
    figures["wf_per_s_1m"] = round(b, 1)
    both: dict[str, list[int]] = {}
    add_delta(both, deltas[empty])
    add_delta(both, deltas[big])
    figures["hot_update_pct"] = hot_pct(both, "durable_runs")
    figures["hot_update_pct_due"] = hot_pct(both, "durable_due")
    figures["hot_update_pct_1m"] = hot_pct(deltas[big], "durable_runs")
    runs = N + WARMUP
    progress(f"throughput: empty {e:.0f} wf/s, big {b:.0f} wf/s (ratio {b / e:.3f}); per run: durable_runs "
             f"{both['durable_runs'][0] / runs / ROUNDS / 2:.2f} updates ({figures['hot_update_pct']} % HOT), "
             f"durable_due {both['durable_due'][0] / runs / ROUNDS / 2:.2f} updates "
             f"({figures['hot_update_pct_due']} % HOT)")


# --- 3. claims, 4. drain -------------------------------------------------------------------

async def claim_50(conn: Any) -> tuple[int, float, float]:
    """One claim as the claimer makes it (its read window of 2 x limit + 8), of CLAIM_LIMIT
    runs: (runs claimed, ms of the claimable read, ms of the claim)."""
    workflows = [f"{WORKFLOW}:1"]
    t0 = time.perf_counter()
    found = await store_runs.claimable(conn, queues=["default"], workflows=workflows, owner="bench-scale",
                                       grace=2.0, limit=CLAIM_LIMIT * 2 + 8)
    t1 = time.perf_counter()
    got = await store_runs.claim(conn, found[:CLAIM_LIMIT], workflows=workflows, owner="bench-scale", grace=2.0)
    return len(got), (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


async def quiesce(conn: Any, schema: str, limit_s: float = 60.0) -> None:
    """Wait (bounded) until no autovacuum works on this schema's tables: a claim timed while
    one does measures the competition for the CPUs, not the claim."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        busy = await scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                                  "AND query LIKE %s", (f"%{schema}%",))
        if not busy:
            break
        await asyncio.sleep(0.5)
    if time.perf_counter() - t0 > 1:
        progress(f"  (waited {time.perf_counter() - t0:.0f} s for autovacuum on the schema)")


async def claim_ms(conn: Any, schema: str, repeat: int = 15) -> float:
    await quiesce(conn, schema)
    times, reads, claims = [], [], []
    for _ in range(repeat):
        async with conn.transaction(force_rollback=True):
            got, read_ms, claim_ms = await claim_50(conn)
        times.append(read_ms + claim_ms)
        reads.append(read_ms)
        claims.append(claim_ms)
        if got != CLAIM_LIMIT:
            raise RuntimeError(f"the claim returned {got} runs, not {CLAIM_LIMIT}")
    progress(f"  (medians: claimable read {statistics.median(reads):.2f} ms, claim {statistics.median(claims):.2f} ms; "
             f"all: {', '.join(f'{t:.1f}' for t in times)})")
    return statistics.median(times)


async def explain_claimable(dsn: str, schema: str) -> None:
    """The plans of the statements the claimable read runs (auto_explain, nested), and the
    buffers the claim of 50 touched, as progress."""
    conn = await connect(dsn, schema=schema, timeout=30)
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    try:
        try:
            await conn.execute("LOAD 'auto_explain'")
        except psycopg.Error as exc:
            progress(f"  (auto_explain not available: {exc}; no plans)")
            return
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_analyze", "on"), ("log_buffers", "on"), ("log_timing", "on"),
                               ("log_level", "notice")):
            await conn.execute(f"SET auto_explain.{setting} = {value}")
        async with conn.transaction(force_rollback=True):
            await claim_50(conn)
        await conn.execute("SELECT 1")  # the plan of a statement comes when its portal closes
        both = list(notices)
    finally:
        await conn.close()
    # the nested statements come as they end, each call's own plan when its portal closes
    cut = next((i for i, p in enumerate(both) if "FROM durable_claimable(" in p), len(both) - 1) + 1
    plans, claim_plans = both[:cut], both[cut:]
    progress("  EXPLAIN (ANALYZE, BUFFERS) of the claimable read (auto_explain), its nested statements then "
             "the call:")
    for text in plans:
        for line in text.splitlines():
            progress(f"    {line}")
    outer = [p for p in claim_plans if "FROM durable_claim(" in p]
    progress(f"  the claim of {CLAIM_LIMIT} runs: {len(claim_plans) - len(outer)} statements nested in "
             "durable_claim; the call:")
    for text in outer[-1:]:
        for line in text.splitlines():
            progress(f"    {line}")


async def drain(dsn: str, schema: str, n: int, limit_s: float | None = None) -> tuple[float, int, dict[str, list[int]]]:
    """Open a worker engine on a backlog of ``n`` pending runs and let it drain them (or
    stop ``limit_s`` seconds after the first completion): completions per second from the
    first to the last, how many, and the update counters of the drain."""
    stats = await connect(dsn, schema=schema, timeout=30)
    try:
        before = await table_stats(stats, schema)
        with Completions() as done:
            async with durable.Engine(dsn, schema=schema, metrics=False):
                if limit_s is None:
                    await done.wait(n, timeout=max(600.0, n / 20))
                else:
                    await done.wait(1, timeout=120)
                    try:
                        await done.wait(n, timeout=limit_s)
                    except RuntimeError:
                        pass  # measured for limit_s seconds
                times = list(done.times)  # (not the runs that finish while the engine closes)
        after = await table_stats(stats, schema)
    finally:
        await stats.close()
    return (len(times) - 1) / (times[-1] - times[0]), len(times), stats_delta(before, after)


async def phase_claims(dsn: str, big: str, conn: Any, figures: dict[str, Any]) -> None:
    progress(f"claims and drains in big: backlogs of {SMALL}, {MID}, {BACKLOG} pending one-step runs")
    small_rates = []
    for r in range(3):
        await add_pending(conn, SMALL)
        if r == 0:
            figures["claim_ms_1k_backlog"] = round(await claim_ms(conn, big), 3)
            progress(f"  backlog {SMALL}: one claim of {CLAIM_LIMIT} in {figures['claim_ms_1k_backlog']} ms "
                     "(median of 15)")
        rate, _, _ = await drain(dsn, big, SMALL)
        small_rates.append(rate)
        progress(f"  backlog {SMALL}, drain {r + 1}/3: {rate:.0f} wf/s")
    if MID < BACKLOG:
        await add_pending(conn, MID)
        figures["claim_ms_20k_backlog"] = round(await claim_ms(conn, big), 3)
        progress(f"  backlog {MID}: one claim of {CLAIM_LIMIT} in {figures['claim_ms_20k_backlog']} ms")
    await add_pending(conn, BACKLOG - (MID if MID < BACKLOG else 0))
    pending = await scalar(conn, "SELECT count(*) FROM durable_due WHERE NOT leased AND due_at IS NOT NULL")
    figures["claim_ms_100k_backlog"] = round(await claim_ms(conn, big), 3)
    progress(f"  backlog {pending}: one claim of {CLAIM_LIMIT} in {figures['claim_ms_100k_backlog']} ms")
    await explain_claimable(dsn, big)
    t0 = time.perf_counter()
    rate, count, d = await drain(dsn, big, pending, limit_s=DRAIN_S)
    progress(f"  backlog {pending}: {count} runs completed at {rate:.0f} wf/s ({time.perf_counter() - t0:.0f} s); "
             f"durable_runs {d['durable_runs'][0]} updates, {d['durable_runs'][1]} HOT; durable_due "
             f"{d['durable_due'][0]} updates, {d['durable_due'][1]} HOT")
    if count < pending:  # the rest of the backlog goes (the next phases want their own)
        await conn.execute("DELETE FROM durable_due WHERE NOT leased AND workflow = %s", (f"{WORKFLOW}:1",))
        await conn.execute("DELETE FROM durable_runs WHERE status = 'pending' AND workflow = %s", (WORKFLOW,))
        await vacuum(conn)
    small = statistics.median(small_rates)
    figures["backlog_drain_ratio_100k"] = round(rate / small, 3)
    figures["drain_wf_per_s_1k"] = round(small, 1)
    figures["drain_wf_per_s_100k"] = round(rate, 1)
    figures["drain_measured_runs"] = count
    figures["hot_update_pct_drain"] = hot_pct(d, "durable_runs")


# --- 5. fan-in under a long writer ---------------------------------------------------------

async def fanin_once(dsn: str, schema: str, n: int, long_writer: bool) -> tuple[float, dict[str, list[int]]]:
    writer = None
    stats = await connect(dsn, schema=schema, timeout=30)
    try:
        before = await table_stats(stats, schema)
        if long_writer:
            writer = await connect(dsn, schema=schema, timeout=30, autocommit=False)
            xid = await scalar(writer, "SELECT pg_current_xact_id()")  # an xid held open across the run
            progress(f"  long writer holds xid {xid} open")
        async with durable.Engine(dsn, schema=schema, metrics=False, history_limit=2 * n + 100) as engine:
            t0 = time.perf_counter()
            total = await engine.run(scale_fanin, n, timeout=1800)
            s = time.perf_counter() - t0
        assert total == n * (n - 1) // 2, total
        if writer is not None:
            held = await scalar(stats, "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                                       "AND state = 'idle in transaction' AND pid = %s", (writer.info.backend_pid,))
            if held != 1:
                raise RuntimeError("the long writer did not hold its transaction open")
            await writer.rollback()
        after = await table_stats(stats, schema)
    finally:
        if writer is not None:
            await writer.close()
        await stats.close()
    return s, stats_delta(before, after)


async def phase_fanin(dsn: str, empty: str, conn: Any, figures: dict[str, Any]) -> None:
    n = FANIN_N
    progress(f"fan-in in empty: a parent starts {n} one-step children and gathers them, one engine")
    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    per_child = {}
    for writer in (False, True):
        await vacuum(conn)
        s, d = await fanin_once(dsn, empty, n, writer)
        per_child[writer] = s / n * 1000
        progress(f"  {'with' if writer else 'without'} a long writer: {s:.1f} s, {per_child[writer]:.3f} ms per child; "
                 f"durable_runs {d['durable_runs'][0]} updates, {d['durable_runs'][1]} HOT")
        if writer:
            figures["hot_update_pct_fanin_long_writer"] = hot_pct(d, "durable_runs")
        else:
            figures["hot_update_pct_fanin"] = hot_pct(d, "durable_runs")
    figures["fanin_long_writer_ratio_50k"] = round(per_child[True] / per_child[False], 3)
    figures["fanin_children"] = n
    figures["fanin_per_child_ms"] = round(per_child[False], 4)
    figures["fanin_per_child_ms_long_writer"] = round(per_child[True], 4)


# --- 6. retention while claims go on -------------------------------------------------------

async def phase_gc(dsn: str, big: str, conn: Any, figures: dict[str, Any]) -> None:
    old = await scalar(conn, "SELECT count(*) FROM durable_runs WHERE finished_at < now() - make_interval(secs => %s)",
                       (RETENTION_S,))
    progress(f"retention in big: {old} runs older than {RETENTION_S:.0f} s, collected by engine.retention.collect() "
             f"while the engine claims from a pending backlog of {GC_BACKLOG} kept topped up")
    await add_pending(conn, GC_BACKLOG)
    stop = asyncio.Event()

    async def feeder() -> None:
        feed = await connect(dsn, schema=big, timeout=30)
        try:
            while not stop.is_set():
                pending = await scalar(feed, "SELECT count(*) FROM durable_due WHERE NOT leased AND due_at IS NOT NULL")
                if pending < GC_BACKLOG // 2:
                    await add_pending(feed, GC_BACKLOG // 2)
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        finally:
            await feed.close()

    deleted = 0
    with Completions() as done:
        async with durable.Engine(dsn, schema=big, metrics=False, retention_s=RETENTION_S,
                                  retention_interval_s=86400) as engine:
            assert engine.retention is not None
            await done.wait(min(100, GC_BACKLOG), timeout=120)  # claims are going on
            feed = asyncio.create_task(feeder())
            c0 = len(done.times)
            t0 = time.perf_counter()
            rounds = 0
            try:
                while time.perf_counter() - t0 < GC_S:
                    got = await engine.retention.collect()
                    rounds += 1
                    deleted += got
                    progress(f"  round {rounds}: {got} runs deleted, {deleted} in {time.perf_counter() - t0:.1f} s "
                             f"({deleted / (time.perf_counter() - t0):.0f} runs/s), "
                             f"{len(done.times) - c0} runs completed meanwhile")
                    if got == 0:
                        break
            finally:
                s = time.perf_counter() - t0
                claims = len(done.times) - c0
                stop.set()
                await feed
    left = await scalar(conn, "SELECT count(*) FROM durable_runs WHERE finished_at < now() - make_interval(secs => %s)",
                        (RETENTION_S,))
    if deleted == 0 and old:
        raise RuntimeError("retention deleted nothing (see the log for a failed round)")
    progress(f"retention: {deleted} runs deleted in {s:.1f} s ({deleted / s:.0f} runs/s), {left} old runs left; "
             f"{claims} runs completed meanwhile ({claims / s:.0f} wf/s)")
    figures["gc_runs_per_s_1m"] = round(deleted / s, 1)
    figures["gc_runs_deleted"] = deleted
    figures["gc_claims_wf_per_s"] = round(claims / s, 1)


# --- main ----------------------------------------------------------------------------------

async def main() -> dict[str, Any]:
    t_start = time.perf_counter()
    dsn = await resolve_dsn()
    empty = await make_schema(dsn, "scale_empty")
    big = await make_schema(dsn, "scale_big")
    progress(f"schemas {empty} (empty), {big} (big)")
    figures: dict[str, Any] = {}
    conns: dict[str, Any] = {}
    try:
        for s in (empty, big):
            conns[s] = await connect(dsn, schema=s, timeout=30)
        c = conns[big]
        progress(f"filling big: {FINISHED} finished runs, {WAITING} waiting runs")
        await fill(c, FILL_FINISHED, FINISHED, "finished runs (+1 event each)")
        await fill(c, FILL_WAITING, WAITING, "waiting runs (+1 event, +1 queue row each)")
        await vacuum(c, analyze=True)
        await vacuum(conns[empty], analyze=True)
        size = await scalar(c, "SELECT pg_size_pretty(pg_total_relation_size('durable_runs'))")
        progress(f"big: durable_runs {size} with its indexes")
        if "throughput" in PHASES:
            await phase_throughput(dsn, empty, big, conns, figures)
        if "claims" in PHASES:
            await phase_claims(dsn, big, c, figures)
        if "fanin" in PHASES:
            await phase_fanin(dsn, empty, conns[empty], figures)
        if "gc" in PHASES:
            await phase_gc(dsn, big, c, figures)
    finally:
        for conn in conns.values():
            await conn.close()
        for s in (empty, big):
            await drop_schema(dsn, s)
    keys = ("throughput_ratio_1m", "backlog_drain_ratio_100k", "fanin_long_writer_ratio_50k", "hot_update_pct",
            "gc_runs_per_s_1m", "claim_ms_100k_backlog")
    figures = {**{k: figures[k] for k in keys if k in figures}, **figures}
    figures.update(finished_runs=FINISHED, waiting_runs=WAITING, backlog=BACKLOG, n=N, clients=CLIENTS,
                   rounds=ROUNDS, seconds=round(time.perf_counter() - t_start, 1))
    return figures


if __name__ == "__main__":
    run(main)
