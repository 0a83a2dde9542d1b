"""Concurrency regressions in the SQL paths: concurrent signals and duplicate deliveries,
heartbeats against cancel cascades and against a row locked elsewhere, signals to runs
that are not due yet, re-sent signals to finished runs. Real PostgreSQL, real engines."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid

import pytest

import durable

import wf_concurrency_sql as W
from helpers import eventually, new_engine, rows, status_of, tree_key


async def warm(engine: durable.Engine, n: int) -> None:
    """Open ``n`` pooled connections now (the pool grows one at a time on demand, which
    would serialize a burst of concurrent calls)."""
    gate = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with engine.pool.connection():
            entered += 1
            if entered == n:
                gate.set()
            await gate.wait()
    await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(n))), 30)


async def all_calls(coros, timeout: float, what: str) -> list:
    """Run the calls concurrently; fail naming the first exception, or how many calls
    had not returned within ``timeout`` (the old code's deadlocks take seconds each to be
    detected, so a bound keeps a failing run short)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    errs = [t.exception() for t in tasks if t in done and t.exception() is not None]
    assert not errs, f"{what}: {len(errs)} of {len(tasks)} calls raised, e.g. {errs[0]!r}"
    assert not pending, f"{what}: {len(pending)} of {len(tasks)} calls did not return within {timeout} s"
    return [t.result() for t in tasks]


# --- 1. concurrent signals -------------------------------------------------------------


async def test_concurrent_signals_to_one_run_all_arrive_without_errors(db):
    """40 signals sent at once to a run waiting for 40, five times: no call raises (a
    deadlock between the senders must never reach the caller), every payload arrives."""
    n = 40
    async with new_engine(db, pool_size=n + 5) as engine:
        await warm(engine, n + 5)
        for rnd in range(5):
            h = await engine.start(W.collect, n)
            await eventually(lambda: _waiting(db, h.run_id), 10, what="the run to wait")
            got = await all_calls([engine.signal(h.run_id, "s", i) for i in range(n)], 15, f"round {rnd}")
            assert got == [True] * n
            assert sorted(await h.result(timeout=20)) == list(range(n))


async def _waiting(db, run_id) -> bool:
    return await status_of(db, run_id) in ("suspended", "running")


async def test_sibling_children_signalling_their_parent_at_once(db, caplog):
    """Six children started in one transaction each signal their parent right away: the
    parent gets all six promptly, and no sender hit a deadlock (not even a retried one)."""
    caplog.set_level(logging.WARNING, logger="durable")
    async with new_engine(db) as engine:
        for rnd in range(4):
            t0 = time.monotonic()
            h = await engine.start(W.fan_in, 6)
            assert await h.result(timeout=8) == list(range(6))
            took = time.monotonic() - t0
            assert took < 3.0, f"round {rnd}: the parent took {took:.1f} s to get its 6 signals"
    bad = [r.getMessage() for r in caplog.records if "deadlock detected" in r.getMessage().lower()]
    assert not bad, bad[:3]


# --- 2. duplicate deliveries -----------------------------------------------------------


async def test_duplicate_deliveries_racing_deliver_exactly_once(db):
    """120 concurrent sends with the same delivery id: exactly one True, 119 False, no
    exception (no unique violation or deadlock leaks out), one stored signal."""
    async with new_engine(db, pool_size=60) as engine:
        await warm(engine, 60)
        for rnd in range(3):
            h = await engine.start(W.collect, 2)
            await eventually(lambda: _suspended(db, h.run_id), 10, what="the run to wait")
            got = await all_calls([engine.signal(h.run_id, "s", 1, delivery_id="same") for _ in range(120)], 15,
                                  f"round {rnd}")
            assert (got.count(True), got.count(False)) == (1, 119)
            assert await rows(db, "SELECT count(*) FROM durable_signals WHERE run_id = %s AND delivery_id = 'same'",
                              h.run_id) == [(1,)]
            await engine.cancel(h.run_id)


async def _suspended(db, run_id) -> bool:
    return await status_of(db, run_id) == "suspended"


# --- 3. heartbeat against cancel cascades ----------------------------------------------


async def test_heartbeat_racing_cancel_cascades_never_deadlocks(db):
    """Trees of a parent and 12 children, every child leased here in a long step: the
    heartbeat renews all of them as fast as it can while the parents are cancelled (the
    cascade locks parent then children). 150 cascades in all: every cancel and every beat
    returns, none raises."""
    trees_per_batch, batches, fan = 6, 25, 12
    async with new_engine(db, concurrency=1000, pool_size=20, lease_ttl_s=30.0) as engine:
        beats = 0
        for b in range(batches):
            roots = [await engine.start(W.busy_tree, fan) for _ in range(trees_per_batch)]
            ids = [r.run_id for r in roots]

            async def all_running() -> bool:
                (n,), = await rows(db, "SELECT count(*) FROM durable_runs WHERE root_id = ANY(%s) AND depth = 1 "
                                       "AND status = 'running'", ids)
                held = sum(1 for ex in list(engine.runs.active.values()) if ex.root_id in ids and ex.token is not None)
                return n == fan * trees_per_batch and held >= fan * trees_per_batch
            await eventually(all_running, 20, what=f"batch {b}: every child to be in its long step")

            stop = asyncio.Event()
            beat_errors: list[BaseException] = []

            async def beating() -> None:
                nonlocal beats
                while not stop.is_set():
                    try:
                        await engine.heartbeat.beat()
                        beats += 1
                    except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                        beat_errors.append(exc)
                    await asyncio.sleep(0)

            beaters = [asyncio.create_task(beating()) for _ in range(2)]
            try:
                await asyncio.sleep(0.01)
                got = await all_calls([engine.cancel(i) for i in ids], 15, f"batch {b}: cancels")
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*beaters), 15)
            assert not beat_errors, f"batch {b}: {len(beat_errors)} beats raised, e.g. {beat_errors[0]!r}"
            assert all(n == fan + 1 for n in got), got
        assert beats > 0


# --- 4. heartbeat head-of-line blocking ------------------------------------------------


async def test_heartbeat_is_not_blocked_by_one_locked_run(db, engine):
    """Another transaction holds run A's rows locked (the run and its claim-queue row): a
    beat still renews this process's lease (its one row in durable_workers) in time, and
    does not report A lost; once the lock goes, both finish."""
    tag_a, tag_b = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    a = await engine.start(W.busy, tag_a)
    b = await engine.start(W.busy, tag_b)

    async def both_held() -> bool:
        return all(r in engine.runs.active and engine.runs.active[r].token is not None for r in (a.run_id, b.run_id)) and \
            [s for s, in await rows(db, "SELECT status FROM durable_runs WHERE id = ANY(%s)",
                                    [a.run_id, b.run_id])] == ["running", "running"]
    await eventually(both_held, 10, what="both runs to be in their long step")
    token_a = engine.runs.active[a.run_id].token

    locker = await db.conn(autocommit=False)
    await locker.execute("SELECT 1 FROM durable_runs WHERE tree_key = %s AND id = %s FOR UPDATE",
                         (tree_key(a.run_id), a.run_id))
    await locker.execute("SELECT 1 FROM durable_due WHERE tree_key = %s AND run_id = %s FOR UPDATE",
                         (tree_key(a.run_id), a.run_id))
    try:
        (before,), = await rows(db, "SELECT expires_at FROM durable_workers WHERE owner = %s", engine.owner)
        await asyncio.sleep(0.05)
        try:
            lost = await asyncio.wait_for(engine.heartbeat.beat(), 2.0)
        except asyncio.TimeoutError:
            pytest.fail("heartbeat blocked behind the row lock on run A (no return within 2 s)")
        (after,), = await rows(db, "SELECT expires_at FROM durable_workers WHERE owner = %s", engine.owner)
        assert after > before, "the process's lease was not renewed"
        assert lost == 0
        assert a.run_id in engine.runs.active and engine.runs.active[a.run_id].token == token_a, "A was treated as lost"
    finally:
        await locker.rollback()
        await locker.close()
    assert await engine.heartbeat.beat() == 0
    assert a.run_id in engine.runs.active and engine.runs.active[a.run_id].token == token_a
    for t in (tag_a, tag_b):
        W.RELEASE.setdefault(t, asyncio.Event()).set()
    assert await a.result(timeout=10) == tag_a
    assert await b.result(timeout=10) == tag_b


# --- 8. a signal must not make a run due early ----------------------------------------


async def test_signal_does_not_start_a_delayed_run_early(db, engine):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    h = await engine.start(W.waiter, start_at=later)
    assert await status_of(db, h.run_id) == "pending"
    assert await engine.signal(h.run_id, "s", 1) is True
    await asyncio.sleep(1.5)
    assert await status_of(db, h.run_id) == "pending", "the signal started the run an hour early"
    (wake,), = await rows(db, "SELECT next_wakeup_at FROM durable_runs WHERE id = %s", h.run_id)
    assert wake > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=50)
    assert await rows(db, "SELECT count(*) FROM durable_signals WHERE run_id = %s", h.run_id) == [(1,)]


async def test_signal_does_not_cut_a_child_retry_backoff_short(db, engine):
    """A child failed its first attempt and waits out an hour-long retry backoff (its
    successor pending, due in an hour): a signal to it is kept, but does not run it now."""
    tag = f"flaky-{uuid.uuid4()}"
    parent = await engine.start(W.retry_parent, tag)

    async def successor():
        got = await rows(db, "SELECT id, chain_root_id, status, next_wakeup_at FROM durable_runs "
                             "WHERE parent_id = %s AND attempt = 2", parent.run_id)
        return got[0] if got else None
    succ_id, chain_id, status, wake = await eventually(successor, 10, what="the child's retry attempt")
    assert status == "pending" and wake > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=50)
    assert W.ATTEMPTS[tag] == 1
    assert await engine.signal(chain_id, "s", "hi") is True
    await asyncio.sleep(1.5)
    assert await status_of(db, succ_id) == "pending", "the signal ran the retry an hour early"
    assert W.ATTEMPTS[tag] == 1
    await engine.cancel(parent.run_id)


# --- 9. re-sent signals ----------------------------------------------------------------


async def test_resent_delivery_to_a_finished_run_is_a_duplicate_not_an_error(db, engine):
    t = await engine.start(W.waiter)
    await eventually(lambda: _waiting(db, t.run_id), 10, what="the run to wait")
    assert await engine.signal(t.run_id, "s", 1, delivery_id="d1") is True
    assert await t.result(timeout=10) == 1
    # the sender retries (it never saw the first answer): already delivered, not a failure
    assert await engine.signal(t.run_id, "s", 1, delivery_id="d1") is False
    # a new signal (no delivery id, or a new one) to a finished run is still refused
    with pytest.raises(durable.RunFinishedError):
        await engine.signal(t.run_id, "s", 2)
    with pytest.raises(durable.RunFinishedError):
        await engine.signal(t.run_id, "s", 2, delivery_id="d2")
