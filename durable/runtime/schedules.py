"""Schedules: ``engine.schedules`` (create, update, pause, resume, trigger, backfill, delete,
list, describe) and the firing round the dispatchers' schedule loop
(:mod:`durable.worker.scheduler`) runs.

A schedule is a row of ``durable_schedules`` (sql/0011_schedules.sql). Its ticks come from
:class:`durable.ticks.TickSpec` (a cron expression in a time zone, or a fixed interval);
each tick's run id is derived from the schedule id and the tick time
(:func:`durable.ticks.schedule_run_id`), so however many dispatchers fire, and however
often one restarts, a tick is one run. A firing round locks the due rows (SKIP LOCKED),
decides per row which ticks start a run (:func:`plan`: the catch-up window, then the
overlap policy), starts them the normal way (``durable_start_run``: pending, due now,
claimed by any process serving the queue) and advances the rows, in one transaction.

Catch-up: a tick fired at most ``ON_TIME_S`` (10 s) late counts as on time and always fires
(a busy dispatcher); of the ticks older than that (no dispatcher ran), only the latest one
within ``catchup_window`` fires, the others count as missed. Overlap policies (what a tick
does while the schedule's previous run is still pending, running or suspended): ``skip``
(the default), ``buffer_one`` (start it when the previous run ends; at most one waits),
``allow_all``, ``cancel_previous`` (cancel the previous run, then start).
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ..config import EngineSettings
from ..errors import PayloadError, ScheduleConflictError, ScheduleError, ScheduleNotFoundError
from ..observe import hooks
from ..serde import roundtrip
from ..store import lifecycle as store_lifecycle
from ..store import registry as store_registry
from ..store import schedules as store
from ..store.connections import Conn, Pool, run_typed
from ..store.rows import RegisteredWorkflow, RunToStart, Schedule, ScheduleAdvance, ScheduleRun
from ..ticks import OVERLAP_POLICIES, TickSpec, schedule_run_id
from . import catalog
from .registry import WorkflowDef, all_workflows

log = logging.getLogger(__name__)

__all__ = ["Schedules", "ScheduleDescription", "BackfillResult", "plan", "Plan", "ON_TIME_S"]

ON_TIME_S = 10.0             # a tick at most this late still fires (the dispatcher was busy)
DEFAULT_CATCHUP = timedelta(hours=1)
MAX_TICKS_PER_ROUND = 1000   # per schedule; the rest in the next round (at once)
MAX_MISSED_COUNTED = 10_000  # ticks older than the window are counted up to this, then skipped over
MAX_BACKFILL = 10_000
BUFFER_RECHECK = timedelta(seconds=1)  # a buffered tick: how often the previous run is looked at
LIVE = ("pending", "running", "suspended")
_MICRO = timedelta(microseconds=1)
_UNSET: Any = object()


@dataclass(frozen=True)
class ScheduleDescription:
    """``engine.schedules.describe(id)``: the row, its next fire times (UTC) and its
    latest runs (newest first) with their status."""

    schedule: Schedule
    next_fires: list[datetime]
    recent_runs: list[ScheduleRun]


@dataclass(frozen=True)
class BackfillResult:
    """``engine.schedules.backfill``: the ticks in the range, the runs started now, and
    those that existed already (the tick had fired, or was backfilled before)."""

    ticks: int
    started: list[uuid.UUID]
    existing: int


@dataclass
class Plan:
    """What a firing round does with one due schedule."""

    start: list[datetime]
    cancel_previous: bool
    advance: ScheduleAdvance
    ticks_seen: list[datetime] = field(default_factory=list)

    @property
    def run_ids(self) -> list[uuid.UUID]:
        return [schedule_run_id(self.advance.id, t) for t in self.start]


def spec_of(s: Schedule) -> TickSpec:
    return TickSpec(cron=s.cron, every_s=s.every_s, timezone=s.timezone)


def plan(s: Schedule, now: datetime, previous_running: bool) -> Plan:
    """Which of a due schedule's ticks start runs now (pure; see the module docstring)."""
    spec = spec_of(s)
    window = timedelta(seconds=s.catchup_window_s)
    on_time = timedelta(seconds=min(ON_TIME_S, s.catchup_window_s))
    oldest_ok = now - window
    missed = 0
    t = s.next_fire_at
    if t < oldest_ok:  # no dispatcher ran for a while: count what the window lost, skip over it
        it = spec.after(t - _MICRO)
        t = next(it)
        while t < oldest_ok and missed < MAX_MISSED_COUNTED:
            missed += 1
            t = next(it)
        if t < oldest_ok:
            t = spec.next_after(oldest_ok - _MICRO)
    seen: list[datetime] = []
    it = spec.after(t - _MICRO)
    t = next(it)
    while t <= now and len(seen) < MAX_TICKS_PER_ROUND:
        seen.append(t)
        t = next(it)
    late = [x for x in seen if now - x > on_time]
    due = [x for x in seen if now - x <= on_time]
    fire = late[-1:] + due
    missed += max(0, len(late) - 1)

    candidates = ([s.buffered_at] if s.buffered_at is not None else []) + fire
    running = previous_running
    start: list[datetime] = []
    buffered: datetime | None = None
    skipped = 0
    cancel = False
    for tick in candidates:
        if s.overlap == "allow_all" or not running:
            start.append(tick)
            running = True
        elif s.overlap == "skip":
            skipped += 1
        elif s.overlap == "buffer_one":
            if buffered is None:
                buffered = tick
            else:
                skipped += 1
        else:  # cancel_previous
            if start:  # a run this round would start is replaced at once
                start.pop()
                skipped += 1
            else:
                cancel = True
            start.append(tick)
    due_at = t if buffered is None else min(t, now + BUFFER_RECHECK)
    last = start[-1] if start else None
    return Plan(start=start, cancel_previous=cancel, ticks_seen=seen, advance=ScheduleAdvance(
        id=s.id, next_fire_at=t, due_at=due_at, buffered_at=buffered, last_fire_at=last,
        last_run_id=None if last is None else schedule_run_id(s.id, last), fired=len(start), skipped=skipped,
        missed=missed))


def _seconds(value: timedelta | float | int, what: str) -> float:
    secs = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not math.isfinite(secs) \
            or not 0 <= secs <= 10 * 366 * 86400:
        raise ScheduleError(f"{what} must be a timedelta (or seconds) between 0 and 10 years, got {value!r}")
    return float(secs)


def _schedule_id(schedule_id: object) -> str:
    if not isinstance(schedule_id, str) or not schedule_id.strip() or len(schedule_id) > 200:
        raise ScheduleError(f"a schedule id must be a non-empty string of at most 200 characters, got {schedule_id!r}")
    return schedule_id


class Schedules:
    """``engine.schedules``: schedules stored in PostgreSQL, changed at run time. Every
    method validates before it writes (a typed error, nothing written) and wakes the
    dispatchers' schedule loops when it changed something."""

    def __init__(self, settings: EngineSettings, pool: Callable[[], Pool]) -> None:
        self.settings = settings
        self._pool = pool

    # --- definitions ----------------------------------------------------------------------

    def _workflow(self, workflow: WorkflowDef[Any, Any] | str) -> tuple[str, WorkflowDef[Any, Any] | None]:
        if isinstance(workflow, WorkflowDef):
            return workflow.name, all_workflows().get(workflow.name, workflow)
        if isinstance(workflow, str) and workflow.strip():
            return workflow, all_workflows().get(workflow)  # not registered here: accepted by name
        raise ScheduleError(f"workflow must be a @durable.workflow function or its registered name, got {workflow!r}")

    async def _registered(self, name: str) -> RegisteredWorkflow | None:
        """The definition the workers registered for ``name`` (None: none did; a schedule of a
        workflow no worker registered yet is accepted by name)."""

        async def read(conn: Conn) -> RegisteredWorkflow | None:
            return await store_registry.lookup(conn, name)

        return await run_typed(self._pool(), read, what=f"looking up workflow {name!r} in the registry")

    def _input(self, name: str, wf: WorkflowDef[Any, Any] | None, value: Any) -> str:
        if wf is not None and not wf.takes_input and value is not None:
            raise PayloadError(f"workflow {name!r} takes no input (its signature is (ctx)), but the schedule gives one")
        text, _ = roundtrip(value, wf.input_type if wf is not None else None, what=f"input of schedule for {name!r}",
                            limit=self.settings.payload_limit_bytes)
        return text

    async def create(self, id: str, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *,
                     cron: str | None = None, every: timedelta | float | None = None, timezone: str = "UTC",
                     overlap: str = "skip", catchup_window: timedelta | float = DEFAULT_CATCHUP,
                     queue: str | None = None, paused: bool = False) -> Schedule:
        """Create schedule ``id`` starting ``workflow`` with ``input`` at each tick of ``cron``
        (in ``timezone``) or ``every`` interval. Creating it again with the same workflow
        changes its definition (idempotent); another workflow raises ScheduleConflictError."""
        return await self._put(id, workflow, input, cron=cron, every=every, timezone=timezone, overlap=overlap,
                               catchup_window=catchup_window, queue=queue, paused=paused, declared=False)

    async def _put(self, id: str, workflow: WorkflowDef[Any, Any] | str, input: Any, *, cron: str | None,
                   every: timedelta | float | None, timezone: str, overlap: str, catchup_window: timedelta | float,
                   queue: str | None, paused: bool, declared: bool) -> Schedule:
        sid = _schedule_id(id)
        name, wf = self._workflow(workflow)
        spec = TickSpec.parse(cron, every, timezone)
        if overlap not in OVERLAP_POLICIES:
            raise ScheduleError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}; got {overlap!r}")
        window = _seconds(catchup_window, "catchup_window")
        text = self._input(name, wf, input)
        registered = None if wf is not None else await self._registered(name)
        if registered is not None:  # registered by the workers: its schema checks the input
            catalog.check_input(registered, json.loads(text))
        default_queue = wf.queue if wf is not None else registered.queue if registered is not None else "default"
        q = queue if queue is not None else default_queue
        if not isinstance(q, str) or not q:
            raise ScheduleError(f"queue must be a non-empty string, got {queue!r}")
        version = wf.version if wf is not None else registered.version if registered is not None else 1

        async def write(conn: Conn) -> Schedule | None:
            async with conn.transaction():
                now = await store.now(conn)
                row = await store.upsert(conn, id=sid, workflow=name, version=version,
                                         queue=q, input=text, cron=spec.cron, every_s=spec.every_s,
                                         timezone=spec.timezone, overlap=overlap, catchup_window_s=window,
                                         paused=paused, declared=declared, next_fire_at=spec.next_after(now))
                if row is not None:
                    await store.notify(conn)
                    return row
                return None

        row = await run_typed(self._pool(), write, what=f"writing schedule {sid!r}")
        if row is None:
            existing = await self.get(sid)
            raise ScheduleConflictError(
                f"schedule id {sid!r} is already used by a schedule of workflow {existing.workflow!r}, not {name!r}; "
                f"choose another id, or delete that schedule first (durable schedules delete {sid})")
        log.info("schedule %s: %s starts %s", sid, spec.describe(), name, extra={"schedule": sid, "workflow": name})
        return row

    async def update(self, id: str, *, input: Any = _UNSET, cron: str | None = _UNSET,
                     every: timedelta | float | None = _UNSET, timezone: str = _UNSET, overlap: str = _UNSET,
                     catchup_window: timedelta | float = _UNSET, queue: str = _UNSET) -> Schedule:
        """Change some of a schedule's settings (the others stay). Giving ``cron`` drops
        ``every`` and the other way round."""
        cur = await self.get(id)
        if cron is not _UNSET and every is _UNSET:
            every = None
        if every is not _UNSET and cron is _UNSET:
            cron = None
        return await self._put(
            cur.id, cur.workflow, cur.input if input is _UNSET else input,
            cron=cur.cron if cron is _UNSET else cron,
            every=cur.every_s if every is _UNSET else every,
            timezone=cur.timezone if timezone is _UNSET else timezone,
            overlap=cur.overlap if overlap is _UNSET else overlap,
            catchup_window=cur.catchup_window_s if catchup_window is _UNSET else catchup_window,
            queue=cur.queue if queue is _UNSET else queue, paused=cur.paused, declared=cur.declared)

    async def declare(self) -> list[Schedule]:
        """Upsert the schedules declared with ``@durable.workflow(..., schedule=...)`` (id: the
        workflow's name), as an executing engine does when it opens."""
        out = []
        for wf in all_workflows().values():
            if wf.schedule is None:
                continue
            cron, every = (wf.schedule, None) if isinstance(wf.schedule, str) else (None, wf.schedule)
            out.append(await self._put(wf.name, wf, None, cron=cron, every=every, timezone=wf.schedule_timezone,
                                       overlap="skip", catchup_window=DEFAULT_CATCHUP, queue=None, paused=False,
                                       declared=True))
        return out

    # --- state ------------------------------------------------------------------------------

    async def get(self, id: str) -> Schedule:
        sid = _schedule_id(id)

        async def read(conn: Conn) -> Schedule | None:
            return await store.get(conn, sid)

        row = await run_typed(self._pool(), read, what=f"reading schedule {sid!r}")
        if row is None:
            raise ScheduleNotFoundError(sid)
        return row

    async def list(self, *, workflow: str | None = None, limit: int = 1000) -> list[Schedule]:
        async def read(conn: Conn) -> list[Schedule]:
            return await store.list_all(conn, workflow=workflow, limit=limit)

        return await run_typed(self._pool(), read, what="listing schedules")

    async def pause(self, id: str, note: str = "") -> Schedule:
        """Stop firing (ticks while paused are not fired later; resume starts from the next)."""
        sid = _schedule_id(id)

        async def write(conn: Conn) -> Schedule | None:
            async with conn.transaction():
                row = await store.pause(conn, sid, str(note))
                if row is not None:
                    await store.notify(conn)
                return row

        row = await run_typed(self._pool(), write, what=f"pausing schedule {sid!r}")
        if row is None:
            raise ScheduleNotFoundError(sid)
        return row

    async def resume(self, id: str) -> Schedule:
        """Fire again from the next tick after now (a schedule not paused stays as it is)."""
        sid = _schedule_id(id)

        async def write(conn: Conn) -> Schedule | None:
            async with conn.transaction():
                cur = await store.get(conn, sid)
                if cur is None or not cur.paused:
                    return cur
                row = await store.resume(conn, sid, spec_of(cur).next_after(await store.now(conn)))
                await store.notify(conn)
                return row

        row = await run_typed(self._pool(), write, what=f"resuming schedule {sid!r}")
        if row is None:
            raise ScheduleNotFoundError(sid)
        return row

    async def delete(self, id: str) -> None:
        """Delete the schedule (its runs stay)."""
        sid = _schedule_id(id)

        async def write(conn: Conn) -> bool:
            async with conn.transaction():
                gone = await store.delete(conn, sid)
                if gone:
                    await store.notify(conn)
                return gone

        if not await run_typed(self._pool(), write, what=f"deleting schedule {sid!r}"):
            raise ScheduleNotFoundError(sid)

    # --- runs -------------------------------------------------------------------------------

    def _to_start(self, s: Schedule, run_id: uuid.UUID,
                  versions: dict[str, tuple[int, float | None]] | None = None) -> RunToStart:
        """The run of one tick: the version (and execution timeout) of the workflow as this
        process registered it, else as the workers registered it, else as stored."""
        found = (versions if versions is not None else _local_versions()).get(s.workflow)
        version, timeout = found if found is not None else (s.version, None)
        return RunToStart(id=run_id, workflow=s.workflow, version=version, queue=s.queue, input=s.input,
                          timeout=timeout)

    async def _versions(self, conn: Conn, names: set[str]) -> dict[str, tuple[int, float | None]]:
        """Versions and timeouts of these workflows: registered here, else in the registry."""
        out = _local_versions()
        unknown = sorted(n for n in names if n not in out)
        if unknown:
            for row in await store_registry.registered(conn, unknown):
                out[row.name] = (row.version, row.execution_timeout_s)
        return out

    def _emit(self, s: Schedule, started: builtins.list[uuid.UUID]) -> None:
        for run_id in started:
            hooks.emit("run.started", run_id=run_id, workflow=s.workflow, queue=s.queue, parent_run_id=None)

    async def trigger(self, id: str) -> uuid.UUID:
        """Start a run now (whatever the overlap policy); returns its id
        (``engine.get_handle(run_id)`` for its result)."""
        sid = _schedule_id(id)
        run_id = uuid.uuid4()

        async def write(conn: Conn) -> Schedule | None:
            async with conn.transaction():
                s = await store.get(conn, sid)
                if s is None:
                    return None
                versions = await self._versions(conn, {s.workflow})
                await store.start_runs(conn, [self._to_start(s, run_id, versions)])
                await store.started(conn, sid, run_id)
                return s

        s = await run_typed(self._pool(), write, what=f"triggering schedule {sid!r}")
        if s is None:
            raise ScheduleNotFoundError(sid)
        self._emit(s, [run_id])
        return run_id

    async def backfill(self, id: str, start: datetime, end: datetime) -> BackfillResult:
        """Start one run per tick in ``[start, end]`` (aware datetimes; at most 10,000 ticks),
        each with its tick's run id: a tick that fired already is not started again."""
        sid = _schedule_id(id)
        for value, what in ((start, "start"), (end, "end")):
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ScheduleError(f"backfill {what} must be a timezone-aware datetime, e.g. "
                                    f"datetime(2026, 1, 1, tzinfo=UTC); got {value!r}")
        if end < start:
            raise ScheduleError(f"backfill end {end.isoformat()} is before its start {start.isoformat()}; swap them")
        s = await self.get(sid)
        ticks = spec_of(s).between(start, end, MAX_BACKFILL + 1)
        if len(ticks) > MAX_BACKFILL:
            raise ScheduleError(f"backfill of schedule {sid!r} from {start.isoformat()} to {end.isoformat()} covers "
                                f"more than {MAX_BACKFILL} ticks; backfill a shorter range at a time")
        ids = [schedule_run_id(sid, t) for t in ticks]

        async def write(conn: Conn) -> set[uuid.UUID]:
            versions = await self._versions(conn, {s.workflow})
            async with conn.transaction():
                return await store.start_runs(conn, [self._to_start(s, rid, versions) for rid in ids])

        new = await run_typed(self._pool(), write, what=f"backfilling schedule {sid!r}")
        started = [rid for rid in ids if rid in new]
        self._emit(s, started)
        log.info("schedule %s: backfilled %d tick(s), %d started", sid, len(ticks), len(started),
                 extra={"schedule": sid, "workflow": s.workflow})
        return BackfillResult(ticks=len(ticks), started=started, existing=len(ticks) - len(started))

    async def describe(self, id: str, *, next_n: int = 5, last_n: int = 5) -> ScheduleDescription:
        """The schedule, its next ``next_n`` fire times and its latest ``last_n`` runs."""
        sid = _schedule_id(id)

        async def read(conn: Conn) -> tuple[Schedule | None, datetime, dict[uuid.UUID, Any], dict[uuid.UUID, Any]]:
            s = await store.get(conn, sid)
            now = await store.now(conn)
            if s is None:
                return None, now, {}, {}
            back: dict[uuid.UUID, datetime | None] = {}
            if s.last_fire_at is not None:
                it = spec_of(s).before(s.last_fire_at + _MICRO)
                for _ in range(max(0, last_n) * 4):
                    tick = next(it)
                    back[schedule_run_id(sid, tick)] = tick
            if s.last_run_id is not None:
                back.setdefault(s.last_run_id, None)
            return s, now, back, await store.run_states(conn, list(back))

        s, now, ticks, states = await run_typed(self._pool(), read, what=f"describing schedule {sid!r}")
        if s is None:
            raise ScheduleNotFoundError(sid)
        runs = [ScheduleRun(run_id=rid, tick=ticks[rid], status=st[0], created_at=st[1], finished_at=st[2])
                for rid, st in states.items()]
        runs.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        spec = spec_of(s)
        first = s.next_fire_at if not s.paused and s.next_fire_at > now else spec.next_after(now)
        nxt = [first]
        while len(nxt) < next_n:
            nxt.append(spec.next_after(nxt[-1]))
        return ScheduleDescription(schedule=s, next_fires=nxt[:max(0, next_n)], recent_runs=runs[:max(0, last_n)])

    # --- the firing round (the dispatchers' schedule loop) ---------------------------------------

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest due schedule (None: none is due)."""
        async with self._pool().connection() as conn:
            return await store.next_due_in(conn)

    async def fire_due(self, batch: int = 500) -> int:
        """One firing round: lock up to ``batch`` due schedules (skipping those another
        dispatcher holds), start their ticks' runs, advance them; one transaction.
        Returns how many schedules it handled."""
        fired: builtins.list[tuple[Schedule, builtins.list[uuid.UUID]]] = []
        async with self._pool().connection() as conn:
            async with conn.transaction():
                now, rows = await store.lock_due(conn, batch)
                if now is None:
                    return 0
                prev = [s.last_run_id for s in rows if s.overlap != "allow_all" and s.last_run_id is not None]
                states = await store.run_states(conn, prev)
                plans = [plan(s, now, s.last_run_id is not None and s.overlap != "allow_all"
                              and states.get(s.last_run_id, ("",))[0] in LIVE) for s in rows]
                for s, p in zip(rows, plans):
                    if p.cancel_previous and s.last_run_id is not None:
                        if not await self._cancel_previous(conn, s):
                            p.start.clear()  # the previous run's row is busy: try again in a moment
                            p.advance = _unchanged(s, now)
                versions = await self._versions(conn, {s.workflow for s, p in zip(rows, plans) if p.start})
                runs = [self._to_start(s, rid, versions) for s, p in zip(rows, plans) for rid in p.run_ids]
                new = await store.start_runs(conn, runs)
                await store.advance(conn, [p.advance for p in plans])
                for s, p in zip(rows, plans):
                    fired.append((s, [i for i in p.run_ids if i in new]))
                    if p.advance.missed:
                        log.warning("schedule %s: %d tick(s) older than its catch-up window (%gs) were not fired",
                                    s.id, p.advance.missed, s.catchup_window_s,
                                    extra={"schedule": s.id, "workflow": s.workflow})
        for s, ids in fired:
            self._emit(s, ids)
        return len(fired)

    async def _cancel_previous(self, conn: Conn, s: Schedule) -> bool:
        """Overlap 'cancel_previous': cancel the schedule's previous run inside the round's
        transaction (a savepoint, waiting at most 1 s for its row); False when its row is
        busy (the round retries this schedule a moment later)."""
        assert s.last_run_id is not None
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                await store_lifecycle.cancel(conn, s.last_run_id, graceful=False,
                                             reason=f"schedule {s.id}: overlap cancel_previous",
                                             max_depth=self.settings.max_child_depth)
                await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
        except psycopg.errors.LockNotAvailable:
            return False
        except Exception as exc:  # gone already (retention), finished meanwhile: nothing to cancel
            log.debug("schedule %s: previous run %s not cancelled: %s", s.id, s.last_run_id, exc)
        return True


def _local_versions() -> dict[str, tuple[int, float | None]]:
    return {name: (wf.version, wf.execution_timeout) for name, wf in all_workflows().items()}


def _unchanged(s: Schedule, now: datetime) -> ScheduleAdvance:
    """A row left as it was, looked at again in a second."""
    return ScheduleAdvance(id=s.id, next_fire_at=s.next_fire_at, due_at=now + BUFFER_RECHECK,
                           buffered_at=s.buffered_at, last_fire_at=None, last_run_id=None, fired=0, skipped=0,
                           missed=0)
