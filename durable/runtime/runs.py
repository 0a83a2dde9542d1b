"""The run table: the runs this process executes, from claim to give-back.

claim → begin (an :class:`~durable.runtime.execution.Execution`) → park (a suspended
run's coroutine kept in memory, LRU-bounded) → resume (claimed again here: the parked
coroutine goes on without replay) or evict (a later claim replays it cold) → end, or give
back (the lease released at once, buffered outcomes journaled first, so another process
resumes the run without waiting for the lease to expire).

Local timers: a parked run, a delayed start or a retry attempt due later is claimed here
when it is due (a timer per run), rather than at the next poll. Wakes: a notification for
a run parked here claims it at once (:meth:`RunTable.on_wake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ..config import EngineSettings
from ..observe import hooks
from ..store import events as store_events
from ..store import runs as store_runs
from ..store.connections import Pool
from ..store.events import SeqTaken
from ..store.rows import Claim, Event, Pending
from . import branches, runlog
from .execution import Execution
from .host import RunView
from .parked import ParkedRuns
from .registry import WorkflowDef, all_versions, get_version
from .results import ResultWaits
from .stops import Cancelled, Evicted, Finished, LeaseLost, Shutdown
from .sync_steps import SyncSteps

log = logging.getLogger(__name__)

_LOCAL_RETRIES = 50  # a due run whose row another transaction held: look again this many times


class RunTable:
    """Implements :class:`~durable.runtime.host.Host` for the executions of this process."""

    def __init__(self, settings: EngineSettings, owner: str, results: ResultWaits, *,
                 kick_claimer: Callable[[], None], note_deadline: Callable[[float], None]) -> None:
        self.settings = settings
        self.owner = owner
        self.results = results
        self._kick_claimer = kick_claimer
        self._note_deadline = note_deadline
        self._pool: Pool | None = None
        self.active: dict[uuid.UUID, Execution] = {}
        self.parked: ParkedRuns[Execution] = ParkedRuns(settings.max_parked, settings.max_parked_bytes)
        self.loading: set[uuid.UUID] = set()
        self.sync_steps = SyncSteps()  # threads of sync steps, so attempts never overlap here
        self._closing = False
        self.starved = False  # due runs may wait for capacity: a finished execution kicks the claimer then
        self._timers: dict[uuid.UUID, asyncio.TimerHandle] = {}  # local timers, by run id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checking = False
        self._check_again = False
        self._orphans: dict[uuid.UUID, float] = {}  # leased to this process, executed by none: since when
        self.distributed = False    # on Citus: claims commit run by run (see store.runs.claim)
        self._claiming = 0          # claims in flight, from the statement until their runs are registered here
        self._answer_lost = False   # a claim failed: it may have committed with its answer lost

    # --- claims in flight -------------------------------------------------------------------

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        """Around a claim, from its statement until its runs are registered here (active or
        loading). One that fails may have committed without its answer (a connection killed
        at commit; on Citus, a multi-shard commit completed later): the next heartbeat,
        once no claim is in flight, gives back at once the runs leased here that nothing
        executes, rather than one lease TTL later."""
        self._claiming += 1
        try:
            yield
        except Exception:
            self._answer_lost = True
            raise
        finally:
            self._claiming -= 1

    # --- Host -----------------------------------------------------------------------------

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "the run table is not open"
        return self._pool

    @property
    def closing(self) -> bool:
        return self._closing

    def open(self, pool: Pool) -> None:
        self._pool = pool
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = branches.create_outside(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def deliver(self, run_id: uuid.UUID, status: str, result: Any, error: Any) -> None:
        self.results.deliver(run_id, status, result, error)

    def outcome_changed(self, run_id: uuid.UUID) -> None:
        self.results.wake(run_id)

    def note_deadline(self, seconds: float) -> None:
        self._note_deadline(seconds)

    def work_added(self) -> None:
        self._kick_claimer()

    def has(self, run_id: uuid.UUID) -> bool:
        """The run executes, is parked or is being loaded here."""
        return run_id in self.active or run_id in self.parked or run_id in self.loading

    def capacity(self) -> int:
        return self.settings.concurrency - len(self.active) - len(self.loading)

    def workflow_keys(self) -> list[str]:
        return [wf.key for wf in all_versions()]  # every (name, version) registered here

    # --- beginning executions -------------------------------------------------------------

    def begin(self, claim: Claim, wf: WorkflowDef[Any, Any], history: list[Event], source: str) -> None:
        if claim.deadline_in_s is not None:
            self._note_deadline(claim.deadline_in_s)
        ex = Execution(self, claim, wf, history)
        self.active[ex.run_id] = ex
        ex.start()
        hooks.emit("run.resumed", run_id=ex.run_id, workflow=wf.name, source=source,
                   wake_latency_s=claim.resumed_latency_s)
        runlog.debug("claimed" if not history else "claimed (replaying its history)", ex.run_id, wf.name,
                     source=source, attempt=claim.attempt)

    def on_claimed(self, claim: Claim, source: str) -> None:
        run_id = claim.id
        timer = self._timers.pop(run_id, None)
        if timer:
            timer.cancel()
        ex = self.parked.pop(run_id)
        if ex is not None and ex.park_future is not None and not ex.park_future.done():
            if claim.deadline_in_s is not None:
                self._note_deadline(claim.deadline_in_s)
            self.active[run_id] = ex
            ex.park_future.set_result(claim)
            hooks.emit("run.resumed", run_id=run_id, workflow=ex.wf.name, source=source,
                       wake_latency_s=claim.resumed_latency_s)
            runlog.debug("resumed", run_id, ex.wf.name, source=source)
            return
        self.replay(claim, source)

    def replay(self, claim: Claim, source: str) -> None:
        """Execute a claimed run from its journal (cold)."""
        self.loading.add(claim.id)
        self.spawn(self._load_and_begin(claim, source))

    async def _load_and_begin(self, claim: Claim, source: str) -> None:
        run_id = claim.id
        try:
            wf = get_version(claim.workflow, claim.version)  # the version the run started with
            if wf is None:  # unregistered since the claim: give it back
                await self._release_soon(claim.tree_key, run_id, claim.lease_epoch)
                return
            history: list[Event] = []
            if claim.last_seq:
                async with self.pool.connection() as conn:
                    history = await store_runs.load_history(conn, claim.tree_key, run_id)
            self.begin(claim, wf, history, source)
        except Exception as exc:
            log.warning("run %s: could not start its execution (%s); giving its lease back", run_id, exc,
                        extra={"run_id": str(run_id), "workflow": claim.workflow})
            self.spawn(self._release_soon(claim.tree_key, run_id, claim.lease_epoch))
        finally:
            self.loading.discard(run_id)

    def execution_ended(self, ex: RunView, reason: str) -> None:
        if self.active.get(ex.run_id) is ex:
            del self.active[ex.run_id]
        if self.parked.get(ex.run_id) is ex:
            self.parked.pop(ex.run_id)
        if reason in ("shutdown", "database"):
            # stopped at a durable point (graceful shutdown) or by a database error
            self.give_back(ex)
        if reason != "terminal":
            self.results.wake(ex.run_id)  # they re-read the database
        if reason not in ("terminal", "nondeterminism") or self.starved:
            # a finished run frees capacity; that only matters when the claimer left due
            # runs unclaimed for lack of it (otherwise this would cost a claim query per run)
            self._kick_claimer()

    # --- parking --------------------------------------------------------------------------

    async def park(self, ex: RunView, fire_at: float | None, *, due_now: bool, db_now: float) -> Claim:
        """Keep a suspended run's coroutine in memory until this process re-claims it."""
        assert isinstance(ex, Execution)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Claim] = loop.create_future()
        ex.park_future = fut
        if self.active.get(ex.run_id) is ex:
            del self.active[ex.run_id]
        if self._closing:
            raise Shutdown()
        for old in self.parked.add(ex.run_id, ex):
            old.stop(Evicted())
        if due_now:
            self.spawn(self.claim_one(ex.tree_key, ex.run_id, "local"))
        elif fire_at is not None:
            self._arm(ex.tree_key, ex.run_id, fire_at - db_now)
        self._kick_claimer()
        try:
            return await fut
        finally:
            ex.park_future = None

    def _arm(self, tree_key: int, run_id: uuid.UUID, delay: float, tries: int = 0) -> None:
        """Claim ``run_id`` here after ``delay`` seconds (its local timer; one per run)."""
        old = self._timers.pop(run_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[run_id] = loop.call_later(max(0.0, delay), self._timer_fired, tree_key, run_id, tries)

    def _timer_fired(self, tree_key: int, run_id: uuid.UUID, tries: int = 0) -> None:
        self._timers.pop(run_id, None)
        self.spawn(self.claim_one(tree_key, run_id, "local", tries))

    def claim_soon(self, tree_key: int, run_id: uuid.UUID, queue: str, delay: float | None = None) -> None:
        """A run this process created is due later (a delayed start, a retry attempt's
        backoff, a continue-as-new successor): claim it when it is due rather than at the
        next poll."""
        if not self.settings.execute or self._closing or queue not in self.settings.queues:
            return
        if delay is not None:
            self._arm(tree_key, run_id, delay)
        else:
            self.spawn(self.claim_one(tree_key, run_id, "local"))  # not due yet: it arms its timer

    async def claim_one(self, tree_key: int, run_id: uuid.UUID, source: str, tries: int = 0) -> bool:
        if self._closing or not self.settings.execute:
            return False
        with self.claiming():
            try:
                async with self.pool.connection() as conn:
                    got = await store_runs.claim(conn, [(tree_key, run_id)], workflows=self.workflow_keys(),
                                                 owner=self.owner, grace=self.settings.sticky_grace_s)
                    # (one run: one transaction on Citus too)
                    claim = got[0] if got else None
                    state = await store_runs.due_in(conn, tree_key, run_id) if claim is None else None
            except Exception as exc:
                self._answer_lost = True
                log.warning("run %s: claim failed (%s); the poll will retry", run_id, exc,
                            extra={"run_id": str(run_id)})
                return False
            if claim is not None:
                hooks.emit("claim.batch", count=1, source=source)
                self.on_claimed(claim, source)
                return True
        if state is not None and state.status in ("pending", "suspended") and state.due_in_s is not None \
                and not self._closing:
            if state.due_in_s > 0:  # not due yet by the database clock: when it is
                self._arm(tree_key, run_id, state.due_in_s + 0.002)
            elif tries < _LOCAL_RETRIES:  # due, but its row was locked for a moment (a sender, a wake)
                self._arm(tree_key, run_id, 0.02, tries + 1)
        return False

    def on_wake(self, run_id: uuid.UUID, owner: str) -> None:
        """A wake notification: '<run>|<sticky owner>'."""
        ex = self.active.get(run_id)
        if ex is not None:
            ex.kick()  # running here: re-evaluate its waits
            return
        parked = self.parked.get(run_id)
        if parked is not None:
            self.spawn(self.claim_one(parked.tree_key, run_id, "notify"))
        elif not owner or owner == self.owner:
            self._kick_claimer()

    def wake_all_parked(self) -> None:
        """The clock moved (tests): parked runs with local timers look again now."""
        for ex in list(self.parked.values()):
            self.spawn(self.claim_one(ex.tree_key, ex.run_id, "local"))

    # --- giving back ----------------------------------------------------------------------

    def give_back(self, ex: RunView) -> None:
        """Release ``ex``'s lease (its buffered outcomes journaled first) so any process can
        resume the run now rather than after lease expiry."""
        if ex.journal.token is not None:
            self.spawn(self._give_back(ex))

    async def _give_back(self, ex: RunView) -> None:
        # under the journal's write lock: a write in flight (a child start, a timer) ends
        # first, so the buffered outcomes take the seqs after whatever it committed
        journal = ex.journal
        try:
            async with asyncio.timeout(self.settings.lease_ttl_s):
                async with journal.locked():
                    token = journal.token
                    if token is None:
                        return
                    journal.token = None
                    pending, first_seq = journal.take_pending()
        except TimeoutError:  # a write hangs on a dead connection: the lease expires instead
            return
        await self._release_soon(ex.tree_key, ex.run_id, token, pending, first_seq)

    async def _release_soon(self, tree_key: int, run_id: uuid.UUID, token: int, pending: list[Pending] | None = None,
                            first_seq: int = 0) -> None:
        """Release a lease, first journaling the run's buffered outcomes (a finished step
        must not run again), retrying with backoff while the database is unreachable; gives
        up after one lease TTL (by then the lease has expired and anyone may claim the run)."""
        rest = list(pending or ())
        deadline = time.monotonic() + self.settings.lease_ttl_s
        delay = 0.2
        while self._pool is not None:
            try:
                async with self._pool.connection() as conn:
                    try:
                        written = await store_events.append_pending(conn, tree_key, run_id, token, first_seq, rest)
                    except SeqTaken:
                        # an earlier write committed but its answer was lost (a server
                        # restart, a cancelled statement): write what is not there yet
                        done, first_seq = await store_events.written_since(conn, tree_key, run_id, first_seq, rest)
                        rest = rest[done:]
                        continue
                    if written:
                        await store_runs.release(conn, tree_key, run_id, token)
                return
            except Exception as exc:
                if time.monotonic() + delay >= deadline:
                    log.info("run %s: could not release its lease (%s); it resumes after lease expiry",
                             run_id, exc, extra={"run_id": str(run_id)})
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # --- stopping executions of runs that are gone ----------------------------------------

    async def renew_leases(self) -> int:
        """Renew this process's lease on every run it holds (one row: this process's in
        durable_workers) and stop the executions whose lease is gone (cancelled, or claimed
        by another process after this one's lease expired). A run leased to this process
        that nothing here executes for a whole lease TTL (its execution ended with an
        error, or a claim committed whose answer never came back) is given back. Returns
        how many leases were lost."""
        held = [(ex.run_id, token) for ex in list(self.active.values()) if (token := ex.journal.token) is not None]
        async with self.pool.connection() as conn:
            await store_runs.worker_beat(conn, owner=self.owner, host=socket.gethostname(), pid=os.getpid(),
                                         queues=list(self.settings.queues), workflows=self.workflow_keys(),
                                         concurrency=self.settings.concurrency, ttl=self.settings.lease_ttl_s)
            seen = await store_runs.held_leases(conn, self.owner)
            for run_id, tree_key in self._orphaned(seen).items():
                if await store_runs.release_orphan(conn, tree_key, run_id, self.owner):
                    log.warning("run %s: leased here but not executed (a claim's answer was lost); given back",
                                run_id, extra={"run_id": str(run_id)})
        gone = [(ex, token) for run_id, token in held
                if run_id not in seen and (ex := self.active.get(run_id)) is not None and ex.journal.token == token]
        ended: dict[uuid.UUID, str] = {}
        if gone:  # a cancel is not a lease loss: tell them apart (one query, only when a lease is gone)
            async with self.pool.connection() as conn:
                ended = await store_runs.finished_among(conn, [(ex.tree_key, ex.run_id) for ex, _ in gone])
        lost = 0
        for ex, token in gone:
            if ex.journal.token != token:
                continue
            if ended.get(ex.run_id) == "cancelled":
                # the cancel's own line is the outcome (runtime/cancel.py, runlog): DEBUG here
                runlog.debug("stopped (cancelled)", ex.run_id, ex.wf.name)
                ex.stop(Cancelled())
                continue
            lost += 1
            # its execution logs the loss once it has stopped (Execution._log_lease_lost, runlog)
            hooks.emit("lease.lost", run_id=ex.run_id, workflow=ex.wf.name)
            ex.stop(LeaseLost())
        hooks.emit("heartbeat", leases=len(held), lost=lost)
        return lost

    def _orphaned(self, held: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
        """The runs of ``held`` that nothing here has executed for one lease TTL, or, after
        a claim failed (see :meth:`claiming`) and none is in flight, at once."""
        now = time.monotonic()
        if self._answer_lost and self._claiming == 0:
            self._answer_lost = False
            mine_now = set(self.active) | self.loading
            return {r: k for r, k in held.items() if r not in mine_now}
        mine = set(self.active) | self.loading
        for run_id in held:
            if run_id in mine:
                self._orphans.pop(run_id, None)
            else:
                self._orphans.setdefault(run_id, now)
        for run_id in [r for r in self._orphans if r not in held]:
            del self._orphans[run_id]
        due = {r: held[r] for r, since in self._orphans.items() if now - since >= self.settings.lease_ttl_s}
        for run_id in due:
            del self._orphans[run_id]
        return due

    def check_cancelled(self) -> None:
        """Check (once, coalescing bursts of notifications) which executions here lost their run."""
        if not (self.active or self.parked or self.loading):
            return
        if self._checking:
            self._check_again = True
            return
        self._checking = True
        self.spawn(self._check_loop())

    def on_cancel_request(self, run_id: uuid.UUID) -> None:
        """A graceful cancel request for a run executing here: it sees it at its next wait."""
        ex = self.active.get(run_id)
        if ex is not None:
            ex.cancel_requested = True
            ex.kick()

    async def _check_loop(self) -> None:
        extra = 0
        try:
            while True:
                self._check_again = False
                try:
                    await self._check_local()
                except Exception as exc:  # the heartbeat catches what this misses
                    log.warning("checking for cancelled runs failed (%s); the next heartbeat stops them", exc)
                    return
                if self.loading and extra < 4:
                    # runs being loaded were claimed before the cancel: look again once they run
                    extra += 1
                    await asyncio.sleep(0.2)
                    continue
                if not self._check_again:
                    return
        finally:
            self._checking = False

    async def _check_local(self) -> None:
        """Renew (and so check) the leases of running executions; parked runs are checked in
        one query at the same time."""
        checks: list[Coroutine[Any, Any, Any]] = []
        if self.settings.execute and self.active:
            checks.append(self.renew_leases())
        if self.parked and self._pool is not None:
            checks.append(self._drop_finished_parked([(ex.tree_key, ex.run_id) for ex in self.parked.values()]))
        if checks:
            await asyncio.gather(*checks)

    async def _drop_finished_parked(self, parked: list[tuple[int, uuid.UUID]]) -> None:
        async with self.pool.connection() as conn:
            done = await store_runs.finished_among(conn, parked)
        for rid, status in done.items():
            ex = self.parked.pop(rid)
            if ex is not None:
                timer = self._timers.pop(rid, None)
                if timer is not None:
                    timer.cancel()
                ex.stop(Cancelled() if status == "cancelled" else Finished())

    # --- closing --------------------------------------------------------------------------

    def begin_close(self) -> None:
        """From now on executions stop at their next durable point and nothing new starts
        here (called first thing when the engine closes, before its loops are stopped)."""
        self._closing = True
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    async def close(self, grace: float) -> None:
        """Stop claiming here, let executions reach their next durable point for up to
        ``grace`` seconds, give back the leases of those that did not, drop parked runs."""
        self.begin_close()
        deadline = time.monotonic() + grace
        # executions stop at their next durable point (keys.take raises Shutdown once we
        # are closing) and give their lease back; a run being loaded starts and does the same
        while (self.active or self.loading) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for ex in list(self.active.values()):
            self.give_back(ex)
            ex.stop(Shutdown())
        for ex in self.parked.clear():
            ex.stop(Shutdown())
        tasks = [ex.task for ex in list(self.active.values()) if ex.task is not None] + list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._pool is not None and self.settings.execute:
            try:  # leases given back; what is still held is claimable at once, and sticky hints end
                async with self._pool.connection() as conn:
                    await store_runs.worker_gone(conn, self.owner)
            except Exception as exc:
                log.warning("could not end this process's leases on close (%s); they expire after %.0f s",
                            exc, self.settings.lease_ttl_s)

    def detach(self) -> None:
        """The pool is closing: nothing here may use it any more."""
        self._pool = None
