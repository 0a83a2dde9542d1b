"""When a schedule fires: its ticks from a cron expression (in a time zone) or a fixed
interval, validated, with the run id each tick gets. Pure computation, no database.

Cron expressions are parsed and iterated by `cronsim <https://pypi.org/project/cronsim/>`_
(the evaluator of Healthchecks.io; typed, no dependencies, 5 fields, or 6 with seconds
first). It handles daylight-saving transitions as Debian's cron does: a job at a fixed
local time that falls into the hour skipped in spring runs at the first minute after the
gap (02:30 → 03:00), and one whose time occurs twice in autumn runs once (the first
time); jobs that run every hour or more often follow the clock (an hourly job runs in both
02:00 hours of the autumn day). Time zones come from :mod:`zoneinfo` (IANA names; the
``tzdata`` package supplies them where the system has none).

``every=`` schedules tick at whole multiples of the interval since the Unix epoch (UTC), so
``every=timedelta(minutes=5)`` fires at :00, :05, ... whatever the time zone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ScheduleError

__all__ = ["TickSpec", "schedule_run_id", "OVERLAP_POLICIES"]

OVERLAP_POLICIES = ("skip", "buffer_one", "allow_all", "cancel_previous")

_FIELDS_5 = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELDS_6 = ("second", *_FIELDS_5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EVERY_S = 10 * 366 * 86400


def _cron_error(expr: str, exc: CronSimError) -> ScheduleError:
    """A typed error naming the field (and its position) cronsim refused, with the fix."""
    parts = expr.split()
    message = str(exc)
    if message == "Wrong number of fields" or len(parts) not in (5, 6):
        return ScheduleError(
            f"cron expression {expr!r} has {len(parts)} field(s); write 5 (minute hour day-of-month month "
            "day-of-week, e.g. '0 3 * * *') or 6 with seconds first (e.g. '*/10 * * * * *')")
    names = _FIELDS_6 if len(parts) == 6 else _FIELDS_5
    field = message.removeprefix("Bad ").strip()
    if field in names:
        pos = names.index(field)
        return ScheduleError(
            f"cron expression {expr!r}: field {pos + 1} ({field}) {parts[pos]!r} is not valid; fix that field "
            f"(allowed: numbers, ranges a-b, steps */n, lists a,b, *; e.g. '0 3 * * *')")
    return ScheduleError(f"cron expression {expr!r} is not valid ({message}); e.g. '0 3 * * *' is daily at 03:00")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or ScheduleError naming it."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"timezone must be an IANA zone name such as 'UTC' or 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r}: use an IANA zone name such as 'UTC', 'Europe/Berlin' or "
                            "'America/New_York' (install the tzdata package if the system has no zone data)") from None


@dataclass(frozen=True)
class TickSpec:
    """A schedule's ticks: exactly one of ``cron`` (in ``timezone``) or ``every_s``."""

    cron: str | None
    every_s: float | None
    timezone: str = "UTC"

    @classmethod
    def parse(cls, cron: str | None, every: timedelta | float | None, timezone: str = "UTC") -> "TickSpec":
        """Validate; raises ScheduleError naming the problem (the cron field and its
        position, the unknown zone, both or neither of cron/every)."""
        if (cron is None) == (every is None):
            raise ScheduleError("a schedule needs exactly one of cron='0 3 * * *' or every=timedelta(...) "
                                f"(got {'both' if cron is not None else 'neither'})")
        tz = zone(timezone)
        if cron is not None:
            if not isinstance(cron, str):
                raise ScheduleError(f"cron must be a string such as '0 3 * * *', got {cron!r}")
            try:
                CronSim(cron, datetime(2026, 1, 1, tzinfo=tz))
            except CronSimError as exc:
                raise _cron_error(cron, exc) from None
            except (ValueError, IndexError, KeyError) as exc:
                raise ScheduleError(f"cron expression {cron!r} is not valid ({exc}); e.g. '0 3 * * *'") from None
            return cls(cron=" ".join(cron.split()), every_s=None, timezone=timezone)
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 1 <= seconds <= _MAX_EVERY_S \
                or seconds != int(seconds):
            raise ScheduleError(f"every must be a whole number of seconds between 1 second and 10 years, e.g. "
                                f"every=timedelta(minutes=5); got {every!r}")
        return cls(cron=None, every_s=float(seconds), timezone=timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.timezone})"
        return f"every {self.every_s:g}s"

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after ``t`` (an aware datetime), in UTC."""
        return next(self.after(t))

    def after(self, t: datetime) -> Iterator[datetime]:
        """The ticks strictly after ``t``, in UTC, increasing."""
        t = t.astimezone(UTC)
        if self.every_s is not None:
            step = int(self.every_s)
            k = int((t - _EPOCH).total_seconds() // step) + 1
            while True:
                tick = _EPOCH + timedelta(seconds=k * step)
                if tick > t:
                    yield tick
                k += 1
        assert self.cron is not None
        last = t
        for local in CronSim(self.cron, t.astimezone(self.tz)):
            tick = local.astimezone(UTC)
            if tick > last:  # (a wall-clock iteration may repeat a tick around a DST change)
                last = tick
                yield tick

    def before(self, t: datetime) -> Iterator[datetime]:
        """The ticks strictly before ``t``, in UTC, decreasing (for ``describe``)."""
        t = t.astimezone(UTC)
        if self.every_s is not None:
            step = int(self.every_s)
            k = -int(-(t - _EPOCH).total_seconds() // step) - 1
            while True:
                yield _EPOCH + timedelta(seconds=k * step)
                k -= 1
        assert self.cron is not None
        last = t
        for local in CronSim(self.cron, t.astimezone(self.tz), reverse=True):
            tick = local.astimezone(UTC)
            if tick < last:
                last = tick
                yield tick

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The ticks in ``[start, end]`` (at most ``limit``), in UTC."""
        out: list[datetime] = []
        for tick in self.after(start.astimezone(UTC) - timedelta(microseconds=1)):
            if tick > end or len(out) >= limit:
                break
            out.append(tick)
        return out


def schedule_run_id(schedule_id: str, tick: datetime) -> uuid.UUID:
    """The run id of a schedule's tick: the same for every dispatcher, so a tick started
    twice (a race, a restart) is one run."""
    stamp = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return uuid.uuid5(uuid.NAMESPACE_URL, f"durable:schedule:{schedule_id}:{stamp}")
