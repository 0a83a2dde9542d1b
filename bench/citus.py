"""The same benches on plain PostgreSQL and on a Citus cluster, as ratios. ``python -m bench.citus``.

Runs ``bench.fanout``, ``bench.wake`` and ``bench.throughput`` as subprocesses
(``python -m bench.X`` from the repository root, ``DURABLE_DSN`` set to each side), once on
plain PostgreSQL and once on the Citus coordinator, bench by bench, plain first (with
``BENCH_CITUS_REPEAT`` > 1 the pairs repeat interleaved and each side's figure is the
median), and reads each child's last line (its JSON). Every ``BENCH_*`` variable of this
process is dropped from the children's environment; each gets the sizes below:

* ``bench.fanout``: ``BENCH_SIZES=1000``, ``BENCH_WORKERS=1`` (best of 3);
* ``bench.wake``: its defaults (650 measured children);
* ``bench.throughput``: ``BENCH_N=3000``, ``BENCH_REPEAT=1``, its idle phase shortened to
  ``BENCH_IDLE_S=2`` and its peak-RSS phase to ``BENCH_INFLIGHT=50`` (its pgbench phase
  and its 2-dispatcher rounds have no switch: they run, their figures are kept as raw).

Then, on plain PostgreSQL only, ``bench.fanout`` with ``BENCH_SIZES=10000`` without and with
``BENCH_LONG_WRITER=1`` (another connection holds an xid open for the whole fan-out).

On a Citus schema every table is distributed by tree (``migrate`` does it when the
extension is installed): before the benches this checks that a fresh schema migrated on the
Citus DSN really is (``distributed_tables``).

Last line: JSON with
``fanout_ratio`` (Citus ÷ plain per-child ms at 1,000 children; > 1 = Citus slower),
``wake_p50_ratio`` (Citus ÷ plain wake p50; > 1 = Citus slower),
``throughput_ratio`` (Citus ÷ plain wf/s with 1 dispatcher; < 1 = Citus slower),
``fanout_scaling_long_writer`` (plain only: per-child ms at 10,000 children with the long
writer ÷ without; target ≤ 1.5), and the raw figures per side (``plain``, ``citus``,
``long_writer``).

Env: ``DURABLE_DSN`` (plain PostgreSQL; embedded PostgreSQL when unset),
``DURABLE_CITUS_DSN`` (default ``postgresql://postgres@127.0.0.1:9700/durable``, the
coordinator ``scripts/citus-cluster start`` runs), ``BENCH_CITUS_REPEAT`` (default 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CITUS_DSN = "postgresql://postgres@127.0.0.1:9700/durable"
CHILD_TIMEOUT_S = 1800

FANOUT_ENV = {"BENCH_SIZES": "1000", "BENCH_WORKERS": "1"}
WAKE_ENV: dict[str, str] = {}
THROUGHPUT_ENV = {"BENCH_N": "3000", "BENCH_REPEAT": "1", "BENCH_IDLE_S": "2", "BENCH_INFLIGHT": "50"}
LONG_ENV = {"BENCH_SIZES": "10000", "BENCH_WORKERS": "1", "BENCH_REPEAT": "1"}


class Unavailable(SystemExit):
    pass


async def check_citus(dsn: str) -> dict[str, Any]:
    """Citus version and active workers of ``dsn``; exit with a clear message when it does
    not answer or is not Citus."""
    import psycopg

    from durable.store.connections import masked

    hint = ("start the local cluster with `scripts/citus-cluster start` (check it with "
            "`scripts/citus-cluster status`) or point DURABLE_CITUS_DSN at a Citus coordinator")
    try:
        conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10), 15)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise Unavailable(f"bench.citus: the Citus DSN {masked(dsn)} does not answer ({exc}); {hint}") from None
    try:
        row = await (await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).fetchone()
        if row is None:
            raise Unavailable(f"bench.citus: {masked(dsn)} answers but has no citus extension in that "
                              f"database; {hint}")
        workers = await (await conn.execute("SELECT node_name, node_port FROM citus_get_active_worker_nodes() "
                                            "ORDER BY 1, 2")).fetchall()
    finally:
        await conn.close()
    return {"citus_version": row[0], "worker_nodes": len(workers),
            "workers": [f"{h}:{p}" for h, p in workers]}


async def check_plain(dsn: str) -> None:
    from durable.store.connections import connect, masked
    from durable.store.migrate import is_citus

    conn = await connect(dsn, schema="public", timeout=30)
    try:
        if await is_citus(conn):
            raise SystemExit(f"bench.citus: DURABLE_DSN {masked(dsn)} is a Citus database; it must be plain "
                             "PostgreSQL (the Citus side is DURABLE_CITUS_DSN)")
    finally:
        await conn.close()


async def distributed_tables(dsn: str) -> int:
    """Migrate a fresh schema on ``dsn`` as every bench does and count its distributed and
    reference tables (0 would mean the benches ran undistributed)."""
    from bench.common import drop_schema, make_schema
    from durable.store.connections import connect

    schema = await make_schema(dsn, "citus_check")
    try:
        conn = await connect(dsn, schema="public", timeout=30)
        try:
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s", (schema,))).fetchone()
        finally:
            await conn.close()
    finally:
        await drop_schema(dsn, schema)
    return int(row[0])  # type: ignore[index]


async def run_bench(name: str, side: str, dsn: str, extra: dict[str, str]) -> dict[str, Any]:
    """``python -m bench.NAME`` with DURABLE_DSN = ``dsn``; its output as progress, its last
    line parsed as JSON."""
    from bench.common import progress

    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env.update(extra, DURABLE_DSN=dsn)
    knobs = " ".join(f"{k}={v}" for k, v in extra.items())
    progress(f"[{side}] python -m bench.{name} {knobs}".rstrip())
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", f"bench.{name}", cwd=str(ROOT), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            print(f"    [{side} {name}] {line}", flush=True)

    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), CHILD_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"bench.{name} on {side} did not finish in {CHILD_TIMEOUT_S} s") from None
    last = next((line for line in reversed(lines) if line.strip()), "")
    if proc.returncode != 0:
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"bench.{name} on {side} exited with {proc.returncode}:\n{tail}")
    try:
        figures = json.loads(last)
    except ValueError:
        raise RuntimeError(f"bench.{name} on {side}: last line is not JSON: {last!r}") from None
    progress(f"[{side}] bench.{name} done in {time.perf_counter() - t0:.0f} s")
    return figures


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


async def main() -> dict[str, Any]:
    from bench.common import progress, resolve_dsn
    from durable.store.connections import masked

    t_start = time.perf_counter()
    repeat = int(os.environ.get("BENCH_CITUS_REPEAT", "1"))
    citus_dsn = os.environ.get("DURABLE_CITUS_DSN") or DEFAULT_CITUS_DSN
    cluster = await check_citus(citus_dsn)
    plain_dsn = await resolve_dsn()
    await check_plain(plain_dsn)
    dist = await distributed_tables(citus_dsn)
    if dist == 0:
        raise SystemExit(f"bench.citus: a schema migrated on {masked(citus_dsn)} has no distributed table")
    progress(f"plain PostgreSQL: {masked(plain_dsn)}")
    progress(f"Citus {cluster['citus_version']}: coordinator {masked(citus_dsn)}, {cluster['worker_nodes']} "
             f"worker node(s) {', '.join(cluster['workers'])}; a fresh schema has {dist} distributed/reference "
             f"tables; {os.cpu_count()} CPU(s) on this machine")

    sides = {"plain": plain_dsn, "citus": citus_dsn}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"fanout": [], "wake": [], "throughput": []} for s in sides}
    lw: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for r in range(repeat):
        progress(f"round {r + 1}/{repeat}")
        for name, extra in (("fanout", FANOUT_ENV), ("wake", WAKE_ENV), ("throughput", THROUGHPUT_ENV)):
            for side, dsn in sides.items():
                raw[side][name].append(await run_bench(name, side, dsn, extra))
        lw["without"].append(await run_bench("fanout", "plain", plain_dsn, LONG_ENV))
        lw["with"].append(await run_bench("fanout", "plain", plain_dsn, {**LONG_ENV, "BENCH_LONG_WRITER": "1"}))
        if not lw["with"][-1].get("long_writer"):
            raise RuntimeError("bench.fanout with BENCH_LONG_WRITER=1 did not report long_writer: true")

    def side_figures(side: str) -> dict[str, Any]:
        f, w, t = raw[side]["fanout"], raw[side]["wake"], raw[side]["throughput"]
        return {
            "fanout_per_child_ms_1000": _median(f, "per_child_ms_1000"),
            "fanout_s_1000": _median(f, "s_1000"),
            "wake_p50_ms": _median(w, "p50_ms"),
            "wake_p99_ms": _median(w, "p99_ms"),
            "wake_db_p50_ms": _median(w, "db_p50_ms"),
            "wake_round_trip_ms": _median(w, "round_trip_ms"),
            "throughput_wf_per_s_1": _median(t, "wf_per_s_1"),
            "throughput_wf_per_s_2": _median(t, "wf_per_s_2"),
            "pgbench_insert_tps": _median(t, "pgbench_insert_tps"),
        }

    plain, citus = side_figures("plain"), side_figures("citus")
    without = _median(lw["without"], "per_child_ms_10000")
    with_lw = _median(lw["with"], "per_child_ms_10000")
    figures: dict[str, Any] = {
        "fanout_ratio": _ratio(citus["fanout_per_child_ms_1000"], plain["fanout_per_child_ms_1000"]),
        "wake_p50_ratio": _ratio(citus["wake_p50_ms"], plain["wake_p50_ms"]),
        "throughput_ratio": _ratio(citus["throughput_wf_per_s_1"], plain["throughput_wf_per_s_1"]),
        "fanout_scaling_long_writer": _ratio(with_lw, without),
        "plain": plain,
        "citus": {**citus, "worker_nodes": cluster["worker_nodes"], "citus_version": cluster["citus_version"],
                  "distributed_tables": dist},
        "long_writer": {"per_child_ms_10000_without": without, "per_child_ms_10000_with": with_lw,
                        "s_10000_without": _median(lw["without"], "s_10000"),
                        "s_10000_with": _median(lw["with"], "s_10000")},
        "throughput_n": int(THROUGHPUT_ENV["BENCH_N"]),
        "repeat": repeat,
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    progress(f"Citus ÷ plain: fan-out per child ×{figures['fanout_ratio']} (> 1 = slower), wake p50 "
             f"×{figures['wake_p50_ratio']} (> 1 = slower), throughput ×{figures['throughput_ratio']} "
             f"(< 1 = slower); plain fan-out of 10,000 with a long writer ÷ without: "
             f"{figures['fanout_scaling_long_writer']} (target ≤ 1.5)")
    progress("all on one machine: every Citus statement goes coordinator -> worker, so each transaction "
             "costs more there; more worker hosts add capacity for independent trees, not speed to one")
    return figures


if __name__ == "__main__":
    from bench.common import run

    run(main)
