"""The workflow context: every durable operation a workflow can do.

Each operation takes the next *position* (its place in the workflow's sequence of
durable calls). On replay the journal's events at that position answer the call; a
different operation at a journaled position is a non-determinism error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Sequence

from . import branches
from ..observe import hooks
from ..store import queries
from .. import serde
from ..errors import CancellationRequested, ChildCancelledError, ChildFailedError, ConfigurationError, DurableError, RunConflictError, RunNotFoundError, SignalTimeoutError, StepError, StepTimeoutError, WorkflowNotFoundError, PayloadError
from .execution import ContinueAsNew, Outcome, Shutdown, Waiter, _Stop
from .journal import Event, Key, split_key
from .registry import StepDef, WorkflowDef, as_step, resolve
from ..retry import DEFAULT_STEP_RETRY, RetryPolicy

if TYPE_CHECKING:
    from .execution import Execution

_MAX_SECONDS = 10 * 365 * 86400.0


class ParentClosePolicy(str, Enum):
    """What happens to a still-running child when its parent reaches a terminal state."""

    TERMINATE = "terminate"          # cascade-cancel the child (default)
    REQUEST_CANCEL = "request_cancel"  # ask the child to cancel gracefully
    ABANDON = "abandon"              # let the child run on (fire-and-forget)


@dataclass(eq=False)
class ChildRef:
    """A started child run. ``await ref`` (inside its parent) waits for its result."""

    run_id: uuid.UUID
    workflow: str
    parent_run_id: uuid.UUID
    pos: Key
    _ctx: "Context" = field(repr=False)

    def __await__(self) -> Any:
        return self._ctx.wait(self).__await__()

    @property
    def done(self) -> bool:
        return self.run_id in self._ctx._ex.outcomes

    def result(self) -> Any:
        """The child's result once known (after awaiting it or from as_completed);
        raises ChildFailedError / ChildCancelledError like awaiting does."""
        return self._ctx._outcome_value(self)


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > _MAX_SECONDS:
        raise ConfigurationError(f"{what} must be between 0 and {_MAX_SECONDS:.0f} seconds (10 years), got {value!r}")
    return float(value)


def _positive(value: Any, what: str) -> float:
    """A timeout: like _seconds, but 0 (expired before it starts) is refused too."""
    seconds = _seconds(value, what)
    if seconds <= 0:
        raise ConfigurationError(f"{what} must be more than 0 seconds, got {value!r}; leave it unset for no timeout")
    return seconds


class Context:
    """Passed to every workflow as its first argument."""

    def __init__(self, ex: "Execution") -> None:
        self._ex = ex
        self._cross_pos: dict[uuid.UUID, Key] = {}
        self.log = logging.getLogger(f"durable.workflow.{ex.wf.name}")

    # --- facts about the run -------------------------------------------------------------

    @property
    def run_id(self) -> uuid.UUID:
        return self._ex.run_id

    @property
    def workflow(self) -> str:
        return self._ex.wf.name

    @property
    def parent_run_id(self) -> uuid.UUID | None:
        return self._ex.parent_id

    @property
    def root_run_id(self) -> uuid.UUID:
        return self._ex.root_id

    @property
    def attempt(self) -> int:
        return self._ex.attempt

    @property
    def history_length(self) -> int:
        """Events in this run's history (compare with the history limit; see continue_as_new)."""
        return self._ex.history_length

    @property
    def is_replaying(self) -> bool:
        """True while the code re-reads journaled outcomes (e.g. to skip logging)."""
        b = self._branch()
        if b.main:
            return b.index <= self._ex.max_pos
        return b.next_key() in self._ex.by_pos

    def _branch(self) -> branches.Branch:
        """The branch (the workflow's task) calling an operation; see branches.py."""
        return branches.current(self._ex)

    def _take_pos(self) -> Key:
        self._ex._check_live()
        if self._ex.engine.closing:  # graceful shutdown: stop at this durable point
            raise self._ex.halt(Shutdown())
        return self._branch().take()

    def _give_back_pos(self) -> None:
        """The operation just taken wrote nothing (it raised): its key is reused."""
        self._branch().index -= 1

    async def _op(self) -> Key:
        """Take the next operation key; a cancellation point for graceful cancel requests."""
        ex = self._ex
        pos = self._take_pos()
        evs = ex.by_pos.get(pos)
        if evs and evs[-1].kind == "cancel_observed":
            raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
        if ex.cancel_requested and not ex.cancel_observed and pos not in ex.by_pos:
            await ex.append(pos, "cancel_observed", None, {})
            ex.cancel_observed = True
            raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
        return pos

    # --- steps ---------------------------------------------------------------------------

    @branches.engine_op
    async def step(self, fn: Callable[..., Any] | StepDef, *args: Any, name: str | None = None,
                   retry: RetryPolicy | None = None, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once and journal its outcome (at least once on crashes).

        A failure after the retry policy's attempts raises :class:`StepError` (the same
        live and on replay). Sync functions run in a worker thread.
        """
        ex = self._ex
        sd = as_step(fn, name)
        policy = retry or sd.retry or DEFAULT_STEP_RETRY
        limit_s = timeout if timeout is not None else sd.timeout
        if limit_s is not None:
            limit_s = _positive(limit_s, f"timeout of step {sd.name!r}")
        pos = await self._op()
        attempt = 1
        evs = ex.expect(pos, ("step_completed", "step_failed", "step_retry"), sd.name, f"step {sd.name!r}")
        if evs:
            last = evs[-1]
            if last.kind == "step_completed":
                return serde.validate(last.data["result"], sd.result_type, what=f"result of step {sd.name!r}")
            if last.kind == "step_failed":
                raise StepError(sd.name, last.data["error"], last.data["attempt"])
            attempt = last.data["attempt"] + 1
            await self._until(last.data["fire_at"], pos)
        limit = ex.settings.payload_limit_bytes
        while True:
            await ex.flush()  # the previous step's outcome is journaled before this one runs
            ex.begin_busy()
            started = time.monotonic()
            failure: BaseException
            try:
                value = await self._run_step(sd, args, kwargs, limit_s, (ex.run_id, pos))
                text, out = serde.roundtrip(value, sd.result_type, what=f"result of step {sd.name!r}", limit=limit)
            except (_Stop, asyncio.CancelledError):
                raise
            except Exception as exc:
                failure = exc
            else:
                fields = {"run_id": ex.run_id, "workflow": ex.wf.name, "step": sd.name, "attempt": attempt,
                          "duration_s": time.monotonic() - started}
                ex.append_raw(pos, "step_completed", sd.name, '{"attempt":%d,"result":%s}' % (attempt, text),
                              on_written=lambda _seq: hooks.emit("step.completed", **fields))
                return out
            finally:
                ex.end_busy()
            doc = serde.error_doc(failure)
            if not isinstance(failure, PayloadError) and policy.should_retry(failure, attempt):
                delay = policy.delay(attempt)
                fire_at = await ex.append_timer(pos, "step_retry", sd.name, {"attempt": attempt, "error": doc}, delay)
                hooks.emit("step.retried", run_id=ex.run_id, workflow=ex.wf.name, step=sd.name,
                           attempt=attempt, error_type=doc["type"], delay_s=delay)
                await self._until(fire_at, pos)
                attempt += 1
                continue
            await ex.append(pos, "step_failed", sd.name, {"attempt": attempt, "error": doc})
            hooks.emit("step.failed", run_id=ex.run_id, workflow=ex.wf.name, step=sd.name, attempt=attempt,
                       duration_s=time.monotonic() - started, error_type=doc["type"])
            raise StepError(sd.name, doc, attempt) from failure

    async def _run_step(self, sd: StepDef, args: tuple, kwargs: dict, limit_s: float | None,
                        where: tuple[uuid.UUID, Key]) -> Any:
        """Run the step's code outside the workflow's branches (tasks it creates are its
        own). A sync step runs in a thread that nothing can stop: a new attempt of the same
        step in this process waits until the previous attempt's thread has returned."""
        if sd.is_async:
            call: Any = sd.fn(*args, **kwargs)
        else:
            call = await self._ex.engine.sync_steps.start(where, sd.fn, args, kwargs)
        with branches.outside():
            if limit_s is None:
                return await call
            try:
                return await asyncio.wait_for(call, limit_s)
            except asyncio.TimeoutError:
                raise StepTimeoutError(f"step {sd.name!r} took longer than its timeout of {limit_s} s") from None

    async def _until(self, fire_at: float, pos: Key) -> None:
        """Durable wait until the database clock reaches ``fire_at`` (epoch seconds)."""
        fut = asyncio.get_running_loop().create_future()
        await self._ex.wait(Waiter("timer", fut, fire_at=fire_at, pos=pos))

    # --- timers --------------------------------------------------------------------------

    @branches.engine_op
    async def sleep(self, seconds: float) -> None:
        """Durable sleep, measured by the database clock; survives restarts, fires once."""
        seconds = _seconds(seconds, "ctx.sleep seconds")
        pos = await self._op()
        evs = self._ex.expect(pos, ("timer_started",), None, "sleep")
        if evs:
            fire_at = evs[0].data["fire_at"]
        else:
            fire_at = await self._ex.append_timer(pos, "timer_started", None, {"seconds": seconds}, seconds)
        await self._until(fire_at, pos)

    # --- signals -------------------------------------------------------------------------

    @branches.engine_op
    async def wait_signal(self, name: str, *, timeout: float | None = None) -> Any:
        """Wait for the next signal called ``name`` (signals sent earlier are kept) and
        return its payload; raises :class:`SignalTimeoutError` after ``timeout`` seconds."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"signal name must be a non-empty string, got {name!r}")
        if timeout is not None:
            timeout = _seconds(timeout, "wait_signal timeout")
        ex = self._ex
        pos = await self._op()
        evs = ex.expect(pos, ("signal_received", "signal_wait", "signal_timeout"), name, f"wait_signal {name!r}")
        deadline = None
        if evs:
            last = evs[-1]
            if last.kind == "signal_received":
                return last.data["payload"]
            if last.kind == "signal_timeout":
                raise SignalTimeoutError(f"no signal {name!r} arrived within the timeout")
            deadline = last.data.get("fire_at")
        elif timeout is not None:
            deadline = await ex.append_timer(pos, "signal_wait", name, {}, timeout)
        fut = asyncio.get_running_loop().create_future()
        got = await ex.wait(Waiter("signal", fut, name=name, pos=pos, fire_at=deadline))
        if got == "timer":
            await ex.append(pos, "signal_timeout", name, {})
            raise SignalTimeoutError(f"no signal {name!r} arrived within {timeout} s")
        return got[0]

    async def _try_consume_signal(self, w: Waiter) -> bool:
        ex = self._ex
        async with ex.conn() as conn:
            cur = await conn.execute(queries.PEEK_SIGNAL, (ex.run_id, w.name))
            if await cur.fetchone() is None:
                return False
        pos, op = split_key(w.pos)
        try:
            async with ex.write() as (conn, token, seq):
                cur = await conn.execute(queries.CONSUME_SIGNAL, {
                    "id": ex.run_id, "token": token, "seq": seq, "pos": pos, "op": op, "name": w.name})
                row = await cur.fetchone()
                if row is None:
                    raise _NothingWritten()  # another waiter took it meanwhile
                if not row[0]:
                    ex._lost()
        except _NothingWritten:
            return False
        ex._index(Event(seq, pos, "signal_received", w.name, {"payload": row[1]}, op))
        if not w.future.done():  # its branch may have been cancelled while this was written
            w.future.set_result((row[1],))
        return True

    @branches.engine_op
    async def signal(self, run_id: uuid.UUID | str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` with ``payload`` to another run (following continue-as-new).
        Journaled, with a delivery id derived from this call, so a replay never sends it
        twice. Raises RunNotFoundError / RunFinishedError (the same on replay)."""
        await self._ex.engine.lifecycle.signal_from(self, run_id, name, payload)

    @branches.engine_op
    async def cancel_child(self, ref: ChildRef, *, graceful: bool = False) -> int:
        """Cancel one of this run's children and its in-flight descendants (``graceful=True``:
        ask it to cancel itself; it sees CancellationRequested at its next await). Journaled,
        so a replay does not cancel again. Returns a CancelResult (an int: runs cancelled).
        Awaiting the child afterwards raises ChildCancelledError (unless it had finished)."""
        return await self._ex.engine.lifecycle.cancel_child(self, ref, graceful)

    # --- children ------------------------------------------------------------------------

    @branches.engine_op
    async def start_child(self, workflow: WorkflowDef | str, input: Any = None, *, key: str | None = None,
                          site: str | None = None, queue: str | None = None, timeout: float | None = None,
                          retry: RetryPolicy | None = None,
                          parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> ChildRef:
        """Start a child run and return its reference without waiting for it."""
        refs = await self._start_children(workflow, [input], [key], site, queue, timeout, retry, parent_close)
        return refs[0]

    @branches.engine_op
    async def start_children(self, workflow: WorkflowDef | str, inputs: Iterable[Any], *,
                             key: Callable[[Any], str] | None = None, site: str | None = None,
                             queue: str | None = None, timeout: float | None = None,
                             retry: RetryPolicy | None = None,
                             parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> list[ChildRef]:
        """Start one child per input, all in one transaction (fan-out)."""
        inputs = list(inputs)
        keys = [key(i) for i in inputs] if key is not None else [None] * len(inputs)
        return await self._start_children(workflow, inputs, keys, site, queue, timeout, retry, parent_close)

    @branches.engine_op
    async def child(self, workflow: WorkflowDef | str, input: Any = None, **options: Any) -> Any:
        """Start a child and wait for its result (the synchronous form)."""
        ref = await self.start_child(workflow, input, **options)
        return await self.wait(ref)

    async def _start_children(self, workflow: WorkflowDef | str, inputs: list[Any], keys: list[str | None],
                              site: str | None, queue: str | None, timeout: float | None,
                              retry: RetryPolicy | None, parent_close: ParentClosePolicy | str) -> list[ChildRef]:
        ex = self._ex
        wf = resolve(workflow)
        if inputs:
            await self._op()
            self._give_back_pos()  # the cancellation point only; keys are taken below
        policy = ParentClosePolicy(parent_close).value if not isinstance(parent_close, ParentClosePolicy) \
            else parent_close.value
        if timeout is not None:
            timeout = _positive(timeout, "child timeout")
        if site is not None and (not isinstance(site, str) or not site):
            raise ConfigurationError(f"site= must be a non-empty string naming the call site, got {site!r}")
        call_site = site or wf.name
        limit = ex.settings.payload_limit_bytes
        prepared = []
        for value, k in zip(inputs, keys):
            if k is not None and not isinstance(k, str):
                raise ConfigurationError(
                    f"child key must be a string (got {type(k).__name__} {k!r}); use e.g. key=f'order-{{id}}'")
            if not wf.takes_input and value is not None:
                raise PayloadError(f"workflow {wf.name!r} takes no input, but one was given")
            text, _ = serde.roundtrip(value, wf.input_type, what=f"input of child workflow {wf.name!r}", limit=limit)
            prepared.append((text, k))
        refs: list[ChildRef] = []
        specs: list[dict[str, Any]] = []
        seen: set[uuid.UUID] = set()
        branch = self._branch()
        before = branch.snapshot()
        try:
            idents = []
            for text, k in prepared:
                if k is not None:
                    ident = f"{call_site}|key|{k}"
                else:
                    n = branch.site_counts.get(call_site, 0)
                    branch.site_counts[call_site] = n + 1
                    # ordinals per branch: the main branch keeps the classic form
                    ident = f"{call_site}|#{n}" if branch.main else f"{call_site}|{branch.label}#{n}"
                idents.append((uuid.uuid5(ex.run_id, ident), ident))
            for (text, k), (cid, ident) in zip(prepared, idents):
                digest = hashlib.sha256(f"{wf.name}\0{text}".encode()).hexdigest()[:24]
                pos = self._take_pos()
                if cid in seen or ex.child_pos.get(cid, pos) != pos:
                    raise RunConflictError(
                        f"child key {k!r} at site {call_site!r} is used twice in run {ex.run_id}; keys must be "
                        "unique per call site")
                found = f"start_child {wf.name!r} ({ident})"
                evs = ex.by_pos.get(pos)
                if evs:
                    data = evs[0].data
                    if evs[0].kind != "child_started" or evs[0].name != wf.name or data["child_id"] != str(cid) \
                            or data.get("hash") != digest:
                        # live, this call may have failed on a taken child id and written nothing
                        await self._raise_taken([c for c, _ in idents])
                        if evs[0].kind == "child_started" and evs[0].name == wf.name:
                            what = "a different key/site" if data["child_id"] != str(cid) else "a different input"
                            raise ex.nondeterminism(
                                pos, f"child_started {wf.name!r} id={data['child_id']}",
                                f"{found} with {what}")
                        raise ex.nondeterminism(pos, f"{evs[0].kind} {evs[0].name!r}", found)
                else:
                    specs.append({"id": cid, "workflow": wf.name, "version": wf.version,
                                  "queue": queue or wf.queue, "input": text, "key": pos, "hash": digest,
                                  "policy": policy, "timeout": timeout or wf.execution_timeout,
                                  "retry": retry.to_doc() if retry else None})
                seen.add(cid)
                refs.append(ChildRef(cid, wf.name, ex.run_id, pos, self))
            if specs:
                await ex.start_children(specs)
        except BaseException:
            # nothing was written: a caught error leaves no gap in positions or ordinals
            branch.restore(before)
            raise
        if specs:
            timeouts = ex.engine.timeouts
            if timeouts is not None and specs[0]["timeout"]:
                timeouts.note(specs[0]["timeout"])  # claim-independent: the deadline is known now
            for s in specs:
                hooks.emit("child.started", parent_run_id=ex.run_id, child_run_id=s["id"], workflow=wf.name,
                           parent_workflow=ex.wf.name)
                hooks.emit("run.started", run_id=s["id"], workflow=wf.name, queue=s["queue"],
                           parent_run_id=ex.run_id)
        return refs

    async def _raise_taken(self, ids: list[uuid.UUID]) -> None:
        """Replay of a start that failed live because a child id was taken by another run
        (nothing was journaled, so the journal shows the next operation here): fail the
        same way instead of reporting non-determinism."""
        ex = self._ex
        async with ex.conn() as conn:
            row = await (await conn.execute(queries.TAKEN_CHILD_IDS, (ids, ex.run_id))).fetchone()
        if row is not None:
            raise RunConflictError(
                f"child id {row[0]} is already taken by run of workflow {row[1]} (parent {row[2] or 'none'}). "
                "Child ids derive from the parent, the call site and key=; choose another key or site= so the "
                "id is unique")

    def _check_refs(self, refs: Sequence[ChildRef]) -> None:
        for r in refs:
            if not isinstance(r, ChildRef):
                raise ConfigurationError(f"expected a ChildRef from ctx.start_child, got {r!r}")
            if r.parent_run_id != self._ex.run_id:
                raise ConfigurationError(
                    f"child reference {r.run_id} belongs to run {r.parent_run_id}, not to this run "
                    f"{self._ex.run_id}; to wait on another run's child use ctx.wait_run(run_id)")

    async def _await_known(self, ids: list[uuid.UUID], mode: str = "all", pos: Key | None = None) -> None:
        ex = self._ex
        outcomes = ex.outcomes
        if ex.interrupt_seq is not None and pos is None:
            # replaying a wait that a graceful cancel interrupted: it is the first wait
            # whose outcomes were not all journaled before the interruption
            cut = ex.interrupt_seq
            ok = [i in outcomes and outcomes[i].before(cut) for i in ids]
            if not (all(ok) if mode == "all" else any(ok)):
                ex.interrupt_seq = None
                raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
        missing = tuple(i for i in ids if i not in outcomes)
        if missing and (mode == "all" or len(missing) == len(ids)):
            fut = asyncio.get_running_loop().create_future()
            await ex.wait(Waiter("children", fut, ids=missing, mode=mode, pos=pos))

    def _outcome_value(self, ref: ChildRef) -> Any:
        oc = self._ex.outcomes.get(ref.run_id)
        if oc is None:
            raise DurableError(f"child {ref.run_id} has not finished yet; await it first")
        return self._value(oc, ref.workflow, child=True)

    def _value(self, oc: Outcome, workflow: str, *, child: bool) -> Any:
        if oc.status == "completed":
            try:
                tp = resolve(workflow).result_type
            except WorkflowNotFoundError:
                tp = None
            return serde.validate(oc.result, tp, what=f"result of {workflow!r}")
        if oc.status == "failed":
            raise ChildFailedError(oc.run_id, oc.error, workflow)
        reason = (oc.error or {}).get("reason") or (oc.error or {}).get("type") or "cancelled"
        raise ChildCancelledError(oc.run_id, reason)

    @branches.engine_op
    async def wait(self, ref: ChildRef) -> Any:
        """Suspend until the child is terminal; return its result or raise
        :class:`ChildFailedError` / :class:`ChildCancelledError`."""
        self._check_refs([ref])
        await self._await_known([ref.run_id])
        return self._outcome_value(ref)

    @branches.engine_op
    async def gather(self, refs: Sequence[ChildRef], *, return_exceptions: bool = False) -> list[Any]:
        """Wait for all children (fan-in); results in the order of ``refs``."""
        refs = list(refs)
        self._check_refs(refs)
        await self._await_known([r.run_id for r in refs])
        out: list[Any] = []
        for r in refs:
            try:
                out.append(self._outcome_value(r))
            except (ChildFailedError, ChildCancelledError) as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
        return out

    async def as_completed(self, refs: Sequence[ChildRef]) -> AsyncIterator[ChildRef]:
        """Yield each child's reference as it finishes, first finished first; call
        ``ref.result()`` for its value (or its typed error)."""
        refs = list(refs)
        self._check_refs(refs)
        pending = {r.run_id: r for r in refs}
        while pending:
            ref = await self._first_completed(pending)
            del pending[ref.run_id]
            yield ref

    @branches.engine_op
    async def _first_completed(self, pending: dict[uuid.UUID, ChildRef]) -> ChildRef:
        """The earliest journaled outcome among ``pending`` (waiting for one if none is
        known). Journal order, so a replay picks the same child as the live run did."""
        outcomes = self._ex.outcomes
        while True:
            # replaying up to a wait a graceful cancel interrupted: outcomes journaled after
            # the interruption were not known to the live run here
            cut = self._ex.interrupt_seq
            known = [r for i, r in pending.items() if i in outcomes and (cut is None or outcomes[i].before(cut))]
            if known:
                return min(known, key=lambda r: outcomes[r.run_id].order)
            await self._await_known(list(pending), mode="any")

    @branches.engine_op
    async def map(self, workflow: WorkflowDef | str, inputs: Iterable[Any], *, concurrency: int = 10,
                  key: Callable[[Any], str] | None = None, return_exceptions: bool = False,
                  site: str | None = None, queue: str | None = None, timeout: float | None = None,
                  retry: RetryPolicy | None = None,
                  parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> list[Any]:
        """One child per input with at most ``concurrency`` unfinished at once (a sliding
        window: each finished child is replaced by the next input); results in input order.
        With ``return_exceptions`` a failed/cancelled child's typed error takes its place,
        otherwise the first one raises."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive int, got {concurrency!r}")
        items = list(inputs)
        keys: list[str | None] = [key(i) for i in items] if key is not None else [None] * len(items)
        for k in keys:  # refuse bad keys before any child starts
            if k is not None and not isinstance(k, str):
                raise ConfigurationError(
                    f"child key must be a string (got {type(k).__name__} {k!r}); use e.g. key=f'order-{{id}}'")
        resolve(workflow)
        results: list[Any] = [None] * len(items)
        index: dict[uuid.UUID, int] = {}
        inflight: dict[uuid.UUID, ChildRef] = {}
        nxt = 0
        while nxt < len(items) or inflight:
            room = concurrency - len(inflight)
            if room > 0 and nxt < len(items):
                refs = await self._start_children(workflow, items[nxt: nxt + room], keys[nxt: nxt + room], site,
                                                  queue, timeout, retry, parent_close)
                for i, r in enumerate(refs):
                    index[r.run_id] = nxt + i
                    inflight[r.run_id] = r
                nxt += len(refs)
                continue
            ref = await self._first_completed(inflight)
            del inflight[ref.run_id]
            try:
                results[index[ref.run_id]] = ref.result()
            except (ChildFailedError, ChildCancelledError) as exc:
                if not return_exceptions:
                    raise
                results[index[ref.run_id]] = exc
        return results

    # --- waiting on any run (M:N) --------------------------------------------------------

    @branches.engine_op
    async def wait_run(self, run_id: uuid.UUID | str) -> Any:
        """Wait for any run (not only a child) to finish and return its result; many runs
        may wait on one. Raises RunFailedError-compatible ChildFailedError/ChildCancelledError."""
        ex = self._ex
        try:
            target = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise ConfigurationError(f"{run_id!r} is not a run id (a UUID)") from None
        pos = await self._op()
        evs = ex.by_pos.get(pos)
        if evs:
            if evs[0].kind != "wait_started" or evs[0].data["run_id"] != str(target):
                # live, this call may have failed (no such run) and written nothing
                async with ex.conn() as conn:
                    row = await (await conn.execute(queries.RUN_EXISTS, (target,))).fetchone()
                if row is None:
                    self._give_back_pos()
                    raise RunNotFoundError(target)
                expected = f"wait_run {evs[0].data['run_id']}" if evs[0].kind == "wait_started" \
                    else f"{evs[0].kind} {evs[0].name!r}"
                raise ex.nondeterminism(pos, expected, f"wait_run {target}")
            workflow = evs[0].data.get("workflow") or ""
            chain = uuid.UUID(evs[0].data.get("chain_root_id") or str(target))
        else:
            async with ex.conn() as conn:
                row = await (await conn.execute(queries.RUN_EXISTS, (target,))).fetchone()
                if row is None:
                    self._give_back_pos()
                    raise RunNotFoundError(target)
                workflow, chain = row[0], row[1]
                # registered on the chain: any link's terminal wakes us, whenever it happens
                await conn.execute(queries.REGISTER_WAIT, (chain, ex.run_id))
            await ex.append(pos, "wait_started", None, {"run_id": str(target), "workflow": workflow,
                                                        "chain_root_id": str(chain)})
        self._cross_pos[chain] = pos
        await self._await_known([chain], pos=pos)
        return self._value(ex.outcomes[chain], workflow, child=False)

    # --- continue-as-new -----------------------------------------------------------------

    def continue_as_new(self, input: Any = None, *, workflow: WorkflowDef | str | None = None) -> None:
        """End this run and continue as a new run with fresh history (raises; does not return)."""
        wf = resolve(workflow) if workflow is not None else self._ex.wf
        text, _ = serde.roundtrip(input, wf.input_type, what=f"continue_as_new input of {wf.name!r}",
                                  limit=self._ex.settings.payload_limit_bytes)
        raise ContinueAsNew(text, wf)


class _NothingWritten(Exception):
    """Inside a journal write: the statement wrote nothing (its seq is given back)."""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
