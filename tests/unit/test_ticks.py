"""Schedules without a database: cron and interval ticks, daylight-saving transitions,
typed errors naming the cron field / zone, run ids per tick, the firing plan (catch-up
window and overlap policies)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from durable.errors import RegistrationError, ScheduleError
from durable.runtime import registry
from durable.runtime.schedules import ON_TIME_S, plan
from durable.store.rows import Schedule
from durable.ticks import TickSpec, schedule_run_id


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


# --- ticks --------------------------------------------------------------------------------------


def test_every_ticks_are_aligned_to_the_epoch_and_strictly_after():
    s = TickSpec.parse(None, timedelta(minutes=5))
    assert s.next_after(utc(2026, 1, 1, 10, 2, 30)) == utc(2026, 1, 1, 10, 5)
    assert s.next_after(utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 10)  # strictly after
    assert next(s.before(utc(2026, 1, 1, 10, 5))) == utc(2026, 1, 1, 10, 0)
    assert s.between(utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 15), 10) == [
        utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 15)]


def test_cron_with_seconds_and_timezone():
    s = TickSpec.parse("*/20 * * * * *", None)
    assert s.between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), 10) == [
        utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1)]
    ny = TickSpec.parse("0 9 * * MON-FRI", None, "America/New_York")
    assert ny.next_after(utc(2026, 1, 2, 15)) == utc(2026, 1, 5, 14)  # Friday after 09:00 EST -> Monday 14:00Z


def test_dst_spring_forward_a_0230_job_runs_once_at_0300_local():
    s = TickSpec.parse("30 2 * * *", None, "Europe/Berlin")
    ticks = s.between(utc(2026, 3, 27), utc(2026, 3, 31), 10)
    # 02:30 CET = 01:30Z; on 29 March 02:30 does not exist: 03:00 CEST = 01:00Z; then 02:30 CEST = 00:30Z
    assert ticks == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_dst_fall_back_a_0230_job_fires_once():
    s = TickSpec.parse("30 2 * * *", None, "Europe/Berlin")
    ticks = s.between(utc(2026, 10, 24), utc(2026, 10, 27), 10)
    # 25 October: 02:30 happens twice (CEST, then CET); the job fires once, at the first
    assert ticks == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_dst_fall_back_an_hourly_job_follows_the_clock_through_both_0200_hours():
    s = TickSpec.parse("0 * * * *", None, "Europe/Berlin")
    ticks = s.between(utc(2026, 10, 24, 23), utc(2026, 10, 25, 3), 10)
    assert ticks == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2),
                     utc(2026, 10, 25, 3)]  # one tick per real hour: 01:00, 02:00 CEST, 02:00 CET, 03:00, 04:00
    assert list(reversed(ticks[:-1])) == [next(it) for it in [s.before(ticks[-1])] for _ in range(4)]


def test_us_spring_forward_daily_job():
    s = TickSpec.parse("30 2 * * *", None, "America/New_York")
    assert s.between(utc(2026, 3, 7), utc(2026, 3, 10), 10) == [
        utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]  # 8 March: 03:00 EDT


@pytest.mark.parametrize("expr, needle", [
    ("0 3 * *", "has 4 field(s)"),
    ("61 3 * * *", "field 1 (minute) '61'"),
    ("0 25 * * *", "field 2 (hour) '25'"),
    ("0 3 32 * *", "field 3 (day-of-month) '32'"),
    ("0 3 * 13 *", "field 4 (month) '13'"),
    ("0 3 * * FUNDAY", "field 5 (day-of-week) 'FUNDAY'"),
    ("99 0 3 * * *", "field 1 (second) '99'"),
])
def test_malformed_cron_names_the_field_and_its_position(expr, needle):
    with pytest.raises(ScheduleError) as e:
        TickSpec.parse(expr, None)
    assert needle in str(e.value)


def test_bad_timezone_and_spec_combinations():
    with pytest.raises(ScheduleError, match="unknown timezone 'Europe/Atlantis'.*IANA"):
        TickSpec.parse("0 3 * * *", None, "Europe/Atlantis")
    with pytest.raises(ScheduleError, match="exactly one of cron=.*got both"):
        TickSpec.parse("0 3 * * *", timedelta(seconds=5))
    with pytest.raises(ScheduleError, match="got neither"):
        TickSpec.parse(None, None)
    with pytest.raises(ScheduleError, match="whole number of seconds"):
        TickSpec.parse(None, timedelta(milliseconds=1500))


def test_a_declared_schedule_is_validated_at_registration():
    with pytest.raises(RegistrationError, match="workflow 'unit.bad_sched': schedule: .*field 2 \\(hour\\)"):
        @registry.workflow("unit.bad_sched", schedule="0 24 * * *")
        async def bad(ctx): ...
    assert "unit.bad_sched" not in registry.all_workflows()


def test_run_id_per_tick_is_deterministic():
    t = utc(2026, 1, 1, 3)
    assert schedule_run_id("nightly", t) == schedule_run_id("nightly", t.astimezone(TickSpec.parse(
        "0 3 * * *", None, "Asia/Tokyo").tz))  # the same instant in another zone: the same id
    assert schedule_run_id("nightly", t) != schedule_run_id("nightly", t + timedelta(seconds=1))
    assert schedule_run_id("nightly", t) != schedule_run_id("other", t)
    assert isinstance(schedule_run_id("x", t), uuid.UUID)


# --- the firing plan ----------------------------------------------------------------------------


def sched(next_fire_at: datetime, *, overlap: str = "allow_all", every: float = 1.0, window: float = 60.0,
          buffered: datetime | None = None) -> Schedule:
    return Schedule(id="s", workflow="w", version=1, queue="default", input=None, cron=None, every_s=every,
                    timezone="UTC", overlap=overlap, catchup_window_s=window, paused=False, declared=False,
                    next_fire_at=next_fire_at, due_at=next_fire_at, buffered_at=buffered, last_fire_at=None,
                    last_run_id=None, last_run_key=None, fired=0, skipped=0, missed=0, note="",
                    created_at=next_fire_at, updated_at=next_fire_at)


T0 = utc(2026, 1, 1, 12)


def test_plan_fires_every_tick_that_is_at_most_on_time_late():
    p = plan(sched(T0), T0 + timedelta(seconds=2.5), previous_running=False)
    assert p.start == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert p.advance.next_fire_at == T0 + timedelta(seconds=3) == p.advance.due_at
    assert p.advance.last_run_id == schedule_run_id("s", T0 + timedelta(seconds=2))
    assert (p.advance.fired, p.advance.missed, p.advance.skipped) == (3, 0, 0)


def test_plan_catch_up_fires_only_the_latest_missed_tick_within_the_window():
    now = T0 + timedelta(minutes=30, seconds=0.5)
    p = plan(sched(T0, every=60, window=600), now, previous_running=False)
    # ticks 12:00..12:30; 12:20..12:29 within the window but late: the latest (12:29) fires, 12:30 is on time
    assert p.start == [T0 + timedelta(minutes=29), T0 + timedelta(minutes=30)]
    assert p.advance.missed == 29  # 12:00..12:19 older than the window (20) + 12:20..12:28 (9)
    assert p.advance.next_fire_at == T0 + timedelta(minutes=31)


def test_plan_with_every_missed_tick_outside_the_window_fires_nothing():
    now = T0 + timedelta(hours=2, seconds=30)
    p = plan(sched(T0, every=3600, window=10), now, previous_running=False)
    assert p.start == [] and p.advance.missed == 3 and p.advance.next_fire_at == T0 + timedelta(hours=3)
    assert ON_TIME_S >= 10


def test_plan_overlap_skip_and_allow_all():
    now = T0 + timedelta(seconds=1.2)
    assert plan(sched(T0, overlap="skip"), now, previous_running=True).start == []
    p = plan(sched(T0, overlap="skip"), now, previous_running=False)
    assert p.start == [T0] and p.advance.skipped == 1  # the second tick overlaps the first
    assert plan(sched(T0, overlap="allow_all"), now, previous_running=True).start == [T0, T0 + timedelta(seconds=1)]


def test_plan_overlap_buffer_one_holds_one_tick_until_the_previous_run_ends():
    now = T0 + timedelta(seconds=2.2)
    p = plan(sched(T0, overlap="buffer_one"), now, previous_running=True)
    assert p.start == [] and p.advance.buffered_at == T0 and p.advance.skipped == 2
    assert p.advance.due_at == min(now + timedelta(seconds=1), p.advance.next_fire_at)  # looks again soon
    slow = plan(sched(T0, overlap="buffer_one", every=60), T0 + timedelta(seconds=0.5), previous_running=True)
    assert slow.advance.buffered_at == T0 and slow.advance.due_at == T0 + timedelta(seconds=1.5)
    later = plan(sched(T0 + timedelta(seconds=3), overlap="buffer_one", buffered=T0), now, previous_running=False)
    assert later.start == [T0] and later.advance.buffered_at is None


def test_plan_overlap_cancel_previous():
    now = T0 + timedelta(seconds=1.2)
    p = plan(sched(T0, overlap="cancel_previous"), now, previous_running=True)
    assert p.cancel_previous and p.start == [T0 + timedelta(seconds=1)] and p.advance.skipped == 1
    p = plan(sched(T0, overlap="cancel_previous"), T0 + timedelta(seconds=0.2), previous_running=False)
    assert not p.cancel_previous and p.start == [T0]
