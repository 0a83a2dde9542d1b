"""Schedules against real PostgreSQL: the API (create, update, pause, resume, trigger,
backfill, delete, list, describe), firing within a second of the tick with one run per
tick, overlap policies, the catch-up window, a DST transition under TimeControl, the
declarative form, the CLI, and bad input that writes nothing."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import durable
from durable.cli import main as cli_main
from durable.errors import (PayloadError, ScheduleConflictError, ScheduleError, ScheduleNotFoundError)
from durable.runtime import registry
from durable.testing import TimeControl
from durable.ticks import TickSpec, schedule_run_id

import wf_schedules as W
from helpers import count, eventually, execute, new_engine, rows, status_of


async def runs_of(db, workflow: str) -> dict[uuid.UUID, tuple[str, datetime]]:
    return {r[0]: (r[1], r[2]) for r in await rows(db, "SELECT id, status, created_at FROM durable_runs "
                                                       "WHERE workflow = %s", workflow)}


def tick_of(schedule_id: str, run_id: uuid.UUID, start: datetime, end: datetime, every: float = 1.0) -> datetime:
    for t in TickSpec.parse(None, timedelta(seconds=every)).between(start, end, 100_000):
        if schedule_run_id(schedule_id, t) == run_id:
            return t
    raise AssertionError(f"run {run_id} is no tick of {schedule_id} in [{start}, {end}]")


# --- firing -------------------------------------------------------------------------------------


async def test_every_second_one_run_per_tick_within_a_second(engine, db):
    created = datetime.now(UTC)
    s = await engine.schedules.create("each-second", W.tick, {"n": 1}, every=timedelta(seconds=1),
                                      overlap="allow_all")
    assert s.next_fire_at > created - timedelta(seconds=1) and s.workflow == "sched.tick" and s.input == {"n": 1}
    await eventually(lambda: count_runs(db, "sched.tick", 4), timeout=10, what="4 ticks fired")
    await engine.schedules.pause("each-second")
    end = datetime.now(UTC)
    found = await runs_of(db, "sched.tick")
    ticks = sorted(tick_of("each-second", rid, created - timedelta(seconds=1), end) for rid in found)
    assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))]  # no gap, no duplicate
    lags = [(found[schedule_run_id("each-second", t)][1] - t).total_seconds() for t in ticks]
    assert all(0 <= lag < 1.0 for lag in lags), lags  # each started within a second of its tick
    h = engine.get_handle(schedule_run_id("each-second", ticks[0]))
    assert await h.result(timeout=10) == {"n": 1}  # the normal start path: claimed and executed
    d = await engine.schedules.describe("each-second", last_n=3)
    assert [r.tick for r in d.recent_runs] == ticks[::-1][:3]
    assert d.schedule.paused and d.schedule.fired == len(ticks)


async def count_runs(db, workflow: str, n: int) -> bool:
    return (await rows(db, "SELECT count(*) FROM durable_runs WHERE workflow = %s", workflow))[0][0] >= n


async def test_pause_resume_trigger_backfill_delete(engine, db):
    s = await engine.schedules.create("nightly", W.tick, "x", cron="0 3 * * *", timezone="Europe/Berlin")
    assert s.overlap == "skip" and s.cron == "0 3 * * *" and not s.paused
    assert (await engine.schedules.pause("nightly", note="maintenance")).paused
    assert (await engine.schedules.get("nightly")).due_at is None
    run = await engine.schedules.trigger("nightly")  # run now, paused or not
    assert await engine.get_handle(run).result(timeout=10) == "x"
    assert (await engine.schedules.get("nightly")).last_run_id == run

    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, 12, tzinfo=UTC)
    res = await engine.schedules.backfill("nightly", start, end)
    expected = [schedule_run_id("nightly", t) for t in (datetime(2026, 1, d, 2, tzinfo=UTC) for d in (1, 2, 3, 4))]
    assert res.ticks == 4 and res.started == expected and res.existing == 0
    again = await engine.schedules.backfill("nightly", start, end)  # each tick has its run already
    assert again.started == [] and again.existing == 4
    for rid in expected:
        assert await engine.get_handle(rid).result(timeout=10) == "x"

    resumed = await engine.schedules.resume("nightly")
    assert not resumed.paused and resumed.due_at == resumed.next_fire_at > datetime.now(UTC)
    assert (await engine.schedules.resume("nightly")) == resumed  # resuming a running schedule: no change
    d = await engine.schedules.describe("nightly", next_n=3)
    assert [t.astimezone(TickSpec.parse("0 3 * * *", None, "Europe/Berlin").tz).hour for t in d.next_fires] == [3, 3, 3]
    assert len(await engine.schedules.list()) == 1
    await engine.schedules.delete("nightly")
    assert await engine.schedules.list() == []
    with pytest.raises(ScheduleNotFoundError, match="'nightly'.*durable schedules list"):
        await engine.schedules.delete("nightly")
    assert await status_of(db, run) == "completed"  # runs outlive their schedule


async def test_update_changes_timing_keeps_state(engine, db):
    await engine.schedules.create("u", W.tick, 1, cron="0 3 * * *")
    await engine.schedules.pause("u")
    s = await engine.schedules.update("u", every=timedelta(hours=1), input=2, overlap="buffer_one")
    assert (s.cron, s.every_s, s.input, s.overlap, s.paused) == (None, 3600.0, 2, "buffer_one", True)
    assert s.next_fire_at.minute == 0 and s.next_fire_at.second == 0
    s2 = await engine.schedules.create("u", W.tick, 3, every=timedelta(hours=1))  # same workflow: an upsert
    assert s2.input == 3 and s2.paused and s2.next_fire_at == s.next_fire_at  # timing unchanged: tick kept


async def test_a_dispatcher_dying_mid_round_loses_and_doubles_nothing(engine, db):
    """A firing round that locked the row and started the tick's run, then died before it
    committed (its backend terminated, as when its process is SIGKILLed): the dispatchers
    skip the row while it is held, then fire that tick once."""
    from durable.store import schedules as store
    from durable.runtime.schedules import plan

    await engine.schedules.create("crash", W.tick, None, every=timedelta(seconds=2), overlap="allow_all")
    await engine.scheduler.stop()  # (the dying round must be the one that takes the tick)
    await asyncio.sleep(2.1)
    dying = await db.conn(autocommit=False)
    pid = dying.info.backend_pid
    now, got = await store.lock_due(dying, 10)
    engine.scheduler.start()  # the engine's loop runs again, while the dying round holds the row
    p = plan(got[0], now, previous_running=False)
    assert p.start, p
    await store.start_runs(dying, [engine.schedules._to_start(got[0], schedule_run_id("crash", t)) for t in p.start])
    await asyncio.sleep(2.5)  # the next tick is due too; the row stays held, the engine's loop skips it
    assert await count_runs_exactly(db, "sched.tick") == 0  # uncommitted
    await execute(db, "SELECT pg_terminate_backend(%s)", pid)
    await eventually(lambda: count_runs(db, "sched.tick", len(p.start) + 1), what="ticks fired after the crash")
    await engine.schedules.pause("crash")
    s = await engine.schedules.get("crash")
    ids = set(await runs_of(db, "sched.tick"))
    first = p.start[0]
    ticks = [first + timedelta(seconds=2 * i) for i in range(len(ids))]
    assert ids == {schedule_run_id("crash", t) for t in ticks}  # from the held tick on: each once, none lost
    assert s.fired == len(ids)


async def count_runs_exactly(db, workflow: str) -> int:
    return (await rows(db, "SELECT count(*) FROM durable_runs WHERE workflow = %s", workflow))[0][0]


# --- overlap policies --------------------------------------------------------------------------


async def fire_now(engine, db, schedule_id: str, ticks_ago: float = 0.0) -> int:
    """Make the schedule due ``ticks_ago`` seconds ago and run one firing round (a client
    engine, no scheduler loop: deterministic)."""
    await execute(db, "UPDATE durable_schedules SET next_fire_at = date_trunc('second', durable_now()) "
                      "- make_interval(secs => %s), due_at = durable_now() WHERE id = %s", ticks_ago, schedule_id)
    return await engine.schedules.fire_due()


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "cancel_previous", "allow_all"])
async def test_overlap_policies(db, overlap):
    async with new_engine(db, execute=False) as client, new_engine(db, schedules=False) as worker:
        # every second, but fired by hand (no scheduler loop runs): one tick per fire_now
        await client.schedules.create("o", W.gated, "p", every=timedelta(seconds=1), overlap=overlap)
        await fire_now(client, db, "o")
        first = (await client.schedules.get("o")).last_run_id
        await eventually(lambda: status_is(db, first, "suspended"), what="first run waiting for its signal")
        await asyncio.sleep(1.05)
        await fire_now(client, db, "o")  # a second tick while the first runs
        s = await client.schedules.get("o")
        live = [r for r, (st, _) in (await runs_of(db, "sched.gated")).items() if st != "cancelled"]
        if overlap == "skip":
            assert s.skipped == 1 and s.last_run_id == first and live == [first]
        elif overlap == "buffer_one":
            assert s.buffered_at is not None and live == [first] and s.last_run_id == first
            held = s.buffered_at
            buffered = schedule_run_id("o", held)
            await client.signal(first, "go")
            await eventually(lambda: status_is(db, first, "completed"))
            await eventually(lambda: fire_buffered(client, db, buffered), what="the buffered tick started")
            s = await client.schedules.get("o")
            assert s.last_run_id == buffered  # (a newer tick may be held back behind it by now)
            assert s.buffered_at is None or s.buffered_at > held
        elif overlap == "cancel_previous":
            await eventually(lambda: status_is(db, first, "cancelled"))
            assert s.last_run_id != first and live == [s.last_run_id]
        else:
            assert len(live) >= 2 and first in live and s.last_run_id != first and s.skipped == 0
        for rid in await runs_of(db, "sched.gated"):
            if await status_of(db, rid) in ("pending", "running", "suspended"):
                await client.signal(rid, "go")


async def status_is(db, run_id, status) -> bool:
    return await status_of(db, run_id) == status


async def fire_buffered(client, db, run_id) -> bool:
    await execute(db, "UPDATE durable_schedules SET due_at = durable_now() WHERE id = 'o'")
    await client.schedules.fire_due()
    return await status_of(db, run_id) is not None


# --- catch-up ------------------------------------------------------------------------------------


async def test_catch_up_fires_the_latest_missed_tick_within_the_window(db):
    async with new_engine(db, execute=False) as client:
        await client.schedules.create("c", W.tick, None, every=timedelta(seconds=1), overlap="allow_all",
                                      catchup_window=timedelta(seconds=30))
        await fire_now(client, db, "c", ticks_ago=120)  # no dispatcher ran for two minutes
        s = await client.schedules.get("c")
        started = await runs_of(db, "sched.tick")
        # on time (<= 10 s late): ~11 ticks; of the 20 older ones within the window, only the latest
        assert 10 <= s.fired == len(started) <= 13
        assert s.missed >= 105 and s.fired + s.missed + s.skipped >= 120


async def test_dst_spring_forward_under_time_control(db):
    async with new_engine(db, execute=False) as client, TimeControl(client) as clock:
        now = datetime.fromtimestamp(await clock.now(), UTC)
        target = datetime(2027, 3, 27, 12, tzinfo=UTC)  # Europe/Berlin springs forward on 28 March 2027
        await clock.advance((target - now).total_seconds())
        await client.schedules.create("dst", W.tick, None, cron="30 2 * * *", timezone="Europe/Berlin")
        d = await client.schedules.describe("dst", next_n=3)
        assert d.next_fires == [datetime(2027, 3, 28, 1, 0, tzinfo=UTC),   # no 02:30 that day: 03:00 CEST
                                datetime(2027, 3, 29, 0, 30, tzinfo=UTC),  # 02:30 CEST
                                datetime(2027, 3, 30, 0, 30, tzinfo=UTC)]
        await clock.advance(13 * 3600 + 1)  # 2027-03-28 01:00:01Z = 03:00:01 CEST
        assert await client.schedules.fire_due() == 1
        assert set(await runs_of(db, "sched.tick")) == {schedule_run_id("dst", d.next_fires[0])}
        assert (await client.schedules.get("dst")).next_fire_at == d.next_fires[1]
        assert await client.schedules.fire_due() == 0  # fired once per tick, whatever fires again


# --- declared schedules ------------------------------------------------------------------------


async def test_declared_schedule_is_upserted_when_an_executing_engine_opens(db):
    @durable.workflow("sched.declared", schedule="*/30 * * * *", schedule_timezone="Asia/Tokyo")
    async def declared(ctx: durable.Context) -> str:
        return "ok"

    try:
        async with new_engine(db, execute=False) as client:
            with pytest.raises(ScheduleNotFoundError):
                await client.schedules.get("sched.declared")
        async with new_engine(db) as e:
            s = await e.schedules.get("sched.declared")
            assert s.declared and s.cron == "*/30 * * * *" and s.timezone == "Asia/Tokyo" and s.input is None
            assert e.scheduler is not None and e.scheduler.probes >= 1
            await e.schedules.delete("sched.declared")
            await e.schedules.create("sched.declared", W.tick, None, every=timedelta(hours=1))
        engine = new_engine(db)
        with pytest.raises(ScheduleConflictError, match="'sched.declared' is already used"):
            await engine.open()  # the declared id is taken by another workflow's schedule
        assert not engine.opened and engine.pool is None
    finally:
        registry.unregister("sched.declared")


# --- bad input -----------------------------------------------------------------------------------


async def test_bad_input_raises_typed_errors_and_writes_nothing(engine, db):
    await engine.schedules.create("taken", W.tick, None, every=timedelta(minutes=1))
    before = await rows(db, "SELECT * FROM durable_schedules")
    cases = [
        (dict(cron="0 3 * * * * *"), ScheduleError, "has 7 field"),
        (dict(cron="0 3 * 0 *"), ScheduleError, "field 4 (month) '0'"),
        (dict(cron="0 3 * * *", timezone="Mars/Olympus"), ScheduleError, "unknown timezone 'Mars/Olympus'"),
        (dict(cron="0 3 * * *", every=timedelta(1)), ScheduleError, "got both"),
        (dict(), ScheduleError, "got neither"),
        (dict(cron="0 3 * * *", overlap="queue"), ScheduleError, "overlap must be one of skip, buffer_one"),
        (dict(cron="0 3 * * *", catchup_window=-1), ScheduleError, "catchup_window"),
    ]
    for kw, exc, needle in cases:
        with pytest.raises(exc) as e:
            await engine.schedules.create("new", W.tick, None, **kw)
        assert needle in str(e.value)
    with pytest.raises(ScheduleConflictError, match="'taken' is already used by a schedule of workflow 'sched.tick', "
                                                    "not 'sched.gated'; choose another id"):
        await engine.schedules.create("taken", W.gated, None, every=timedelta(minutes=1))
    with pytest.raises(PayloadError, match="takes no input"):
        await engine.schedules.create("new", W.noinput, 5, every=timedelta(minutes=1))
    with pytest.raises(PayloadError):
        await engine.schedules.create("new", W.tick, object(), every=timedelta(minutes=1))
    with pytest.raises(ScheduleError, match="non-empty string"):
        await engine.schedules.create("", W.tick, None, every=timedelta(minutes=1))
    for call in (engine.schedules.pause("nope"), engine.schedules.resume("nope"), engine.schedules.trigger("nope"),
                 engine.schedules.describe("nope"), engine.schedules.update("nope", input=1),
                 engine.schedules.backfill("nope", datetime.now(UTC), datetime.now(UTC))):
        with pytest.raises(ScheduleNotFoundError, match="'nope'"):
            await call
    with pytest.raises(ScheduleError, match="timezone-aware"):
        await engine.schedules.backfill("taken", datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ScheduleError, match="more than 10000 ticks"):
        await engine.schedules.backfill("taken", datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert await rows(db, "SELECT * FROM durable_schedules") == before
    assert await count(db, "durable_runs") == 0
    # a workflow not registered in this process is accepted by name (another process runs it)
    s = await engine.schedules.create("remote", "billing.invoice", {"a": 1}, cron="0 3 * * *", queue="billing")
    assert (s.workflow, s.queue, s.version) == ("billing.invoice", "billing", 1)


async def test_workflow_registered_only_by_the_workers_is_checked_against_the_registry(db):
    from durable.store import registry as store_registry
    from durable.store.rows import RegisteredWorkflow

    async with new_engine(db, execute=False) as client:
        async with client.pool.connection() as conn:  # what a worker process elsewhere registered
            await store_registry.register(conn, [RegisteredWorkflow(
                name="elsewhere.flow", version=3, queue="far", takes_input=True,
                input_schema={"type": "integer", "minimum": 1}, result_schema=None, execution_timeout_s=60.0)],
                owner="elsewhere:1:x")
        with pytest.raises(PayloadError, match="minimum of 1"):
            await client.schedules.create("by-name", "elsewhere.flow", 0, every=timedelta(seconds=1))
        assert await count(db, "durable_schedules") == 0
        s = await client.schedules.create("by-name", "elsewhere.flow", 5, every=timedelta(seconds=1),
                                          overlap="allow_all")
        assert (s.version, s.queue, s.input) == (3, "far", 5)
        await fire_now(client, db, "by-name")
        run = (await client.schedules.get("by-name")).last_run_id
        assert await rows(db, "SELECT workflow, version, queue, input, execution_timeout_s FROM durable_runs "
                              "WHERE id = %s", run) == [("elsewhere.flow", 3, "far", 5, 60.0)]


# --- the CLI ---------------------------------------------------------------------------------------


def cli(db, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["schedules", *argv, "--dsn", db.dsn, "--schema", db.schema], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_cli_schedules(db):
    code, out, err = await _in_thread(cli, db, "create", "rep", "sched.tick", "--every", "1h", "--input", '{"a": 1}',
                                      "--overlap", "allow_all")
    assert code == 0, err
    assert "created schedule 'rep'" in out
    code, out, _ = await _in_thread(cli, db, "list", "--json")
    assert code == 0 and [s["id"] for s in json.loads(out)["schedules"]] == ["rep"]
    code, out, _ = await _in_thread(cli, db, "pause", "rep")
    assert code == 0 and "paused" in out
    code, out, _ = await _in_thread(cli, db, "trigger", "rep", "--json")
    run = uuid.UUID(json.loads(out)["run_id"])
    code, out, _ = await _in_thread(cli, db, "backfill", "rep", "--from", "2026-01-01T00:00:00Z",
                                    "--to", "2026-01-01T02:00:00Z")
    assert code == 0 and "3 tick(s)" in out and "3 started" in out
    code, out, _ = await _in_thread(cli, db, "describe", "rep", "--json")
    doc = json.loads(out)
    assert doc["schedule"]["paused"] and len(doc["next_fires"]) == 5 and str(run) in out
    code, out, _ = await _in_thread(cli, db, "resume", "rep")
    assert code == 0
    code, _, err = await _in_thread(cli, db, "create", "bad", "sched.tick", "--cron", "0 3 * * * * *")
    assert code == 2 and "7 field(s)" in err
    code, _, err = await _in_thread(cli, db, "delete", "rep")
    assert code == 0
    code, _, err = await _in_thread(cli, db, "delete", "rep")
    assert code == 3 and "no schedule with id 'rep'" in err


async def _in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)
