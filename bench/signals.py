"""Concurrent signal senders to one run: ``python -m bench.signals``.

One workflow waits for ``BENCH_SIGNALS`` (M) signals named ``"s"`` (a loop of
``await ctx.wait_signal("s")``) and returns how many it got. It is started on an executing
engine; then ``BENCH_SENDERS`` (N) sender tasks on a separate client engine
(``execute=False``, pool of max(10, N) connections so senders do not queue for a connection)
each send M/N signals to that one run as fast as they can, timing every ``engine.signal``
call. A send that raises is counted as an error (by exception type), never retried and
never fatal. Then the bench waits, bounded, for the run's result (which must be M):

* the run completed -> ``delivered_s`` is first send -> result;
* otherwise (failed sends, or the run itself failed/stalled) the wait stops when every
  successfully sent signal has been consumed and the run still is not done, when nothing
  was consumed for ``BENCH_STALL_S`` seconds, or after ``BENCH_DELIVER_TIMEOUT_S``; the run
  is cancelled and ``delivered_s`` is first send -> last consumption seen (polled every
  0.1 s).

Figures are the median of ``BENCH_REPEAT`` rounds (a fresh run each round, same schema),
except ``errors`` (summed over all rounds) and ``rounds_completed``. Last line: JSON with
``signals_per_s`` (signals sent / wall time of the sending phase, errors included),
``p50_ms``, ``p99_ms`` (per-send latency), ``errors`` (must be 0), ``delivered_s``,
``delivered`` (signals the run consumed), ``rounds_completed``, ``rounds``, ``senders``,
``signals``.
Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_SENDERS`` (default 20),
``BENCH_SIGNALS`` (total per round, default 2000), ``BENCH_REPEAT`` (3),
``BENCH_CLIENT`` (``separate``, default, or ``same``: send from the executing engine),
``BENCH_DELIVER_TIMEOUT_S`` (60), ``BENCH_STALL_S`` (10).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from typing import Any

import durable
from bench.common import bench_schema, percentile, progress, run

SENDERS = int(os.environ.get("BENCH_SENDERS", "20"))
SIGNALS = int(os.environ.get("BENCH_SIGNALS", "2000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CLIENT = os.environ.get("BENCH_CLIENT", "separate")
DELIVER_TIMEOUT_S = float(os.environ.get("BENCH_DELIVER_TIMEOUT_S", "60"))
STALL_S = float(os.environ.get("BENCH_STALL_S", "10"))
POLL_S = 0.1

CONSUMED = "SELECT count(*) FROM durable_signals WHERE run_id = %s AND consumed_seq IS NOT NULL"


@durable.workflow("bench.signals.receiver")
async def receiver(ctx: durable.Context, m: int) -> int:
    got = 0
    for _ in range(m):
        await ctx.wait_signal("s")
        got += 1
    return got


async def _consumed(engine: durable.Engine, run_id: Any) -> int:
    async with engine.pool.connection() as conn:
        cur = await conn.execute(CONSUMED, (run_id,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _send_all(client: durable.Engine, run_id: Any, round_no: int) -> tuple[list[float], Counter, float, float]:
    """N senders, M signals in all; returns (per-send seconds, errors by type, t_first, t_end)."""
    shares = [SIGNALS // SENDERS + (1 if i < SIGNALS % SENDERS else 0) for i in range(SENDERS)]
    lat: list[float] = []
    errors: Counter = Counter()
    first_error: list[str] = []
    sent = [0]

    async def sender(k: int, count: int) -> None:
        for j in range(count):
            t0 = time.perf_counter()
            try:
                await client.signal(run_id, "s", {"sender": k, "i": j})
            except Exception as exc:  # counted, never fatal
                errors[type(exc).__name__] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            lat.append(time.perf_counter() - t0)
            sent[0] += 1

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            progress(f"  round {round_no}: {sent[0]}/{SIGNALS} sends done, {sum(errors.values())} errors")

    tick = asyncio.create_task(ticker())
    t_first = time.perf_counter()
    try:
        await asyncio.gather(*(sender(k, c) for k, c in enumerate(shares)))
    finally:
        t_end = time.perf_counter()
        tick.cancel()
    if first_error:
        progress(f"  round {round_no}: first error: {first_error[0]}")
    return lat, errors, t_first, t_end


async def _await_run(engine: durable.Engine, h: durable.RunHandle, ok_sends: int, t_first: float,
                     round_no: int) -> tuple[bool, float, int, str]:
    """Bounded wait for the run; (completed with M, delivered_s, consumed, outcome)."""
    res = asyncio.create_task(h.result(timeout=DELIVER_TIMEOUT_S))
    last_n, t_change = -1, time.perf_counter()
    t_report = t_change
    outcome = "stalled"
    while True:
        done, _ = await asyncio.wait({res}, timeout=POLL_S)
        if done:
            t_done = time.perf_counter()
            try:
                value = res.result()
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                break
            n = await _consumed(engine, h.run_id)
            return value == SIGNALS, t_done - t_first, n, f"completed with {value}"
        n = await _consumed(engine, h.run_id)
        now = time.perf_counter()
        if n != last_n:
            last_n, t_change = n, now
        if now - t_report >= 1.0:
            progress(f"  round {round_no}: run consumed {n}/{SIGNALS} signals")
            t_report = now
        if ok_sends < SIGNALS and n >= ok_sends:
            outcome = f"all {ok_sends} successful sends consumed, {SIGNALS - ok_sends} never sent"
            break
        if now - t_change >= STALL_S:
            outcome = f"nothing consumed for {STALL_S:.0f} s"
            break
    if not res.done():
        res.cancel()
        try:
            await res
        except BaseException:
            pass
    n = await _consumed(engine, h.run_id)
    try:
        await engine.cancel(h.run_id)
    except Exception:
        pass
    return False, t_change - t_first, n, outcome


async def main() -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    total_errors: Counter = Counter()
    completed = 0
    async with bench_schema("signals") as (dsn, schema):
        async with durable.Engine(dsn, schema=schema, metrics=False) as engine:
            client_cm: Any = (durable.Engine(dsn, schema=schema, execute=False, metrics=False,
                                             pool_size=max(10, SENDERS))
                              if CLIENT != "same" else None)
            client = await client_cm.open() if client_cm is not None else engine
            try:
                progress(f"{SENDERS} senders, {SIGNALS} signals per round to one run, "
                         f"client engine: {'separate (execute=False)' if client_cm else 'same as executor'}, "
                         f"{REPEAT} rounds")
                progress("warm-up: 50 signals")
                h = await engine.start(receiver, 50)
                try:
                    for _ in range(50):
                        await client.signal(h.run_id, "s")
                    await h.result(timeout=10)
                except Exception as exc:  # the measured rounds count errors; never stop here
                    progress(f"warm-up: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    try:
                        await engine.cancel(h.run_id)
                    except Exception:
                        pass

                for r in range(1, REPEAT + 1):
                    h = await engine.start(receiver, SIGNALS)
                    lat, errors, t_first, t_end = await _send_all(client, h.run_id, r)
                    n_err = sum(errors.values())
                    total_errors.update(errors)
                    send_s = t_end - t_first
                    progress(f"  round {r}: sending took {send_s:.3f} s, errors {dict(errors) or 0}; "
                             f"waiting for the run")
                    ok, delivered_s, consumed, outcome = await _await_run(engine, h, SIGNALS - n_err, t_first, r)
                    completed += ok
                    figures = {"signals_per_s": SIGNALS / send_s, "p50_ms": percentile(lat, 50) * 1e3,
                               "p99_ms": percentile(lat, 99) * 1e3, "errors": float(n_err),
                               "delivered_s": delivered_s, "delivered": float(consumed)}
                    rounds.append(figures)
                    progress(f"round {r}/{REPEAT}: {outcome}; "
                             + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
            finally:
                if client_cm is not None:
                    await client_cm.close()
    med = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    if total_errors:
        progress(f"send errors over all rounds: {dict(total_errors)}")
    return {
        "signals_per_s": round(med["signals_per_s"], 1),
        "p99_ms": round(med["p99_ms"], 3),
        "p50_ms": round(med["p50_ms"], 3),
        "errors": sum(total_errors.values()),
        "delivered_s": round(med["delivered_s"], 3),
        "delivered": int(med["delivered"]),
        "rounds_completed": completed,
        "rounds": REPEAT,
        "senders": SENDERS,
        "signals": SIGNALS,
    }


if __name__ == "__main__":
    run(main)
