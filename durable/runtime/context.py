"""The workflow context: every durable operation a workflow can do.

Each operation takes the next *key* of the branch calling it (durable/runtime/keys.py):
on replay the journal's events at that key answer the call, live the operation does its
work and journals it under the run's lease. Every operation is an *engine op*
(:func:`durable.runtime.branches.engine_op`): tasks created while it runs are not the
workflow's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, overload

from ..attributes import check_attributes
from ..errors import ConfigurationError, PayloadError, SignalTimeoutError, StepError, StepTimeoutError
from ..observe import hooks
from ..retry import DEFAULT_STEP_RETRY, RetryPolicy
from ..serde import error_doc, roundtrip, validate
from ..store.rows import Key
from . import branches, cancel, keys, signals
from .children import ChildRef, Children, ParentClosePolicy
from .host import RunView
from .registry import StepDef, WorkflowDef, as_step, resolve
from .stops import ContinueAsNew, Stop
from .timing import positive
from .timing import seconds as as_seconds
from .waits import Waiter

T = TypeVar("T")


class Context:
    """Passed to every workflow as its first argument."""

    def __init__(self, ex: RunView) -> None:
        self._ex = ex
        self._children = Children(ex)
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
        return self._ex.journal.history_length

    @property
    def is_replaying(self) -> bool:
        """True while the code re-reads journaled outcomes (e.g. to skip logging)."""
        b = keys.branch(self._ex)
        if b.main:
            return b.index <= self._ex.journal.max_pos
        return self._ex.journal.at(b.next_key()) is not None

    # --- steps ---------------------------------------------------------------------------

    @overload
    async def step(self, fn: StepDef[T], *args: Any, name: str | None = None, retry: RetryPolicy | None = None,
                   timeout: float | None = None, **kwargs: Any) -> T: ...

    @overload
    async def step(self, fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None,
                   retry: RetryPolicy | None = None, timeout: float | None = None, **kwargs: Any) -> T: ...

    @overload
    async def step(self, fn: Callable[..., T], *args: Any, name: str | None = None, retry: RetryPolicy | None = None,
                   timeout: float | None = None, **kwargs: Any) -> T: ...

    @branches.engine_op
    async def step(self, fn: Any, *args: Any, name: str | None = None, retry: RetryPolicy | None = None,
                   timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once and journal its outcome (at least once on crashes).

        A failure after the retry policy's attempts raises :class:`StepError` (the same
        live and on replay). Sync functions run in a worker thread.
        """
        ex = self._ex
        sd = as_step(fn, name)
        policy = retry or sd.retry or DEFAULT_STEP_RETRY
        limit_s = timeout if timeout is not None else sd.timeout
        if limit_s is not None:
            limit_s = positive(limit_s, f"timeout of step {sd.name!r}")
        key = await keys.op(ex)
        attempt = 1
        evs = ex.journal.expect(key, ("step_completed", "step_failed", "step_retry"), sd.name, f"step {sd.name!r}")
        if evs:
            last = evs[-1]
            if last.kind == "step_completed":
                return validate(last.data["result"], sd.result_type, what=f"result of step {sd.name!r}")
            if last.kind == "step_failed":
                raise StepError(sd.name, last.data["error"], last.data["attempt"])
            attempt = last.data["attempt"] + 1
            await self._until(last.data["fire_at"], key)
        limit = ex.settings.payload_limit_bytes
        while True:
            await ex.journal.flush()  # the previous step's outcome is journaled before this one runs
            ex.begin_busy()
            started = time.monotonic()
            failure: BaseException
            try:
                value = await self._run_step(sd, args, kwargs, limit_s, (ex.run_id, key))
                text, out = roundtrip(value, sd.result_type, what=f"result of step {sd.name!r}", limit=limit)
            except (Stop, asyncio.CancelledError):
                raise
            except Exception as exc:
                failure = exc
            else:
                fields = {"run_id": ex.run_id, "workflow": ex.wf.name, "step": sd.name, "attempt": attempt,
                          "duration_s": time.monotonic() - started}
                ex.journal.buffer(key, "step_completed", sd.name, '{"attempt":%d,"result":%s}' % (attempt, text),
                                  on_written=lambda _seq: hooks.emit("step.completed", **fields))
                return out
            finally:
                ex.end_busy()
            doc = error_doc(failure)
            if not isinstance(failure, PayloadError) and policy.should_retry(failure, attempt):
                delay = policy.delay(attempt)
                fire_at = await ex.journal.append_timer(key, "step_retry", sd.name, {"attempt": attempt, "error": doc},
                                                        delay)
                hooks.emit("step.retried", run_id=ex.run_id, workflow=ex.wf.name, step=sd.name,
                           attempt=attempt, error_type=doc["type"], delay_s=delay)
                await self._until(fire_at, key)
                attempt += 1
                continue
            await ex.journal.append(key, "step_failed", sd.name, {"attempt": attempt, "error": doc})
            hooks.emit("step.failed", run_id=ex.run_id, workflow=ex.wf.name, step=sd.name, attempt=attempt,
                       duration_s=time.monotonic() - started, error_type=doc["type"])
            raise StepError(sd.name, doc, attempt) from failure

    async def _run_step(self, sd: StepDef[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                        limit_s: float | None, where: tuple[uuid.UUID, Key]) -> Any:
        """Run the step's code outside the workflow's branches (tasks it creates are its
        own). A sync step runs in a thread that nothing can stop: a new attempt of the same
        step in this process waits until the previous attempt's thread has returned."""
        if sd.is_async:
            call: Any = sd.fn(*args, **kwargs)
        else:
            call = await self._ex.host.sync_steps.start(where, sd.fn, args, kwargs)
        with branches.outside():
            if limit_s is None:
                return await call
            try:
                return await asyncio.wait_for(call, limit_s)
            except asyncio.TimeoutError:
                raise StepTimeoutError(f"step {sd.name!r} took longer than its timeout of {limit_s} s") from None

    async def _until(self, fire_at: float, key: Key) -> None:
        """Durable wait until the database clock reaches ``fire_at`` (epoch seconds)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._ex.wait(Waiter("timer", fut, fire_at=fire_at, key=key))

    # --- search attributes (issue 14) -------------------------------------------------------

    @branches.engine_op
    async def set_attributes(self, **attributes: Any) -> None:
        """Set search attributes of this run (``customer="c1", tier=["gold"]``: a str, int,
        float or bool, or a list of those), merged into those it has; ``engine.list_runs(
        attributes=...)`` and ``durable runs --attr`` filter on them. Journaled: a replay
        writes nothing again. A bad value raises SearchAttributeError and writes nothing."""
        ex = self._ex
        attrs = check_attributes(attributes, f"ctx.set_attributes in run {ex.run_id}")
        if not attrs:
            return
        key = await keys.op(ex)
        if ex.journal.expect(key, ("attributes",), None, f"set_attributes({', '.join(attrs)})"):
            return
        await ex.journal.set_attributes(key, attrs)

    # --- timers --------------------------------------------------------------------------

    @branches.engine_op
    async def sleep(self, seconds: float) -> None:
        """Durable sleep, measured by the database clock; survives restarts, fires once."""
        delay = as_seconds(seconds, "ctx.sleep seconds")
        key = await keys.op(self._ex)
        evs = self._ex.journal.expect(key, ("timer_started",), None, "sleep")
        if evs:
            fire_at = evs[0].data["fire_at"]
        else:
            fire_at = await self._ex.journal.append_timer(key, "timer_started", None, {"seconds": delay}, delay)
        await self._until(fire_at, key)

    # --- signals -------------------------------------------------------------------------

    @branches.engine_op
    async def wait_signal(self, name: str, *, timeout: float | None = None) -> Any:
        """Wait for the next signal called ``name`` (signals sent earlier are kept) and
        return its payload; raises :class:`SignalTimeoutError` after ``timeout`` seconds."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"signal name must be a non-empty string, got {name!r}")
        if timeout is not None:
            timeout = as_seconds(timeout, "wait_signal timeout")
        ex = self._ex
        key = await keys.op(ex)
        evs = ex.journal.expect(key, ("signal_received", "signal_wait", "signal_timeout"), name,
                                f"wait_signal {name!r}")
        deadline = None
        if evs:
            last = evs[-1]
            if last.kind == "signal_received":
                return last.data["payload"]
            if last.kind == "signal_timeout":
                raise SignalTimeoutError(f"no signal {name!r} arrived within the timeout")
            deadline = last.data.get("fire_at")
        elif timeout is not None:
            deadline = await ex.journal.append_timer(key, "signal_wait", name, {}, timeout)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        got = await ex.wait(Waiter("signal", fut, name=name, key=key, fire_at=deadline))
        if got == "timer":
            await ex.journal.append(key, "signal_timeout", name, {})
            raise SignalTimeoutError(f"no signal {name!r} arrived within {timeout} s")
        return got[0]

    @branches.engine_op
    async def signal(self, run_id: uuid.UUID | str, name: str, payload: Any = None) -> None:
        """Send signal ``name`` with ``payload`` to another run (following continue-as-new).
        Journaled, with a delivery id derived from this call, so a replay never sends it
        twice. Raises RunNotFoundError / RunFinishedError (the same on replay)."""
        await signals.send_from(self._ex, run_id, name, payload)

    @branches.engine_op
    async def cancel_child(self, ref: ChildRef, *, graceful: bool = False) -> cancel.CancelResult:
        """Cancel one of this run's children and its in-flight descendants (``graceful=True``:
        ask it to cancel itself; it sees CancellationRequested at its next await). Journaled,
        so a replay does not cancel again. Returns a CancelResult (an int: runs cancelled).
        Awaiting the child afterwards raises ChildCancelledError (unless it had finished)."""
        self._children.check_refs([ref])
        return await cancel.cancel_child(self._ex, ref.run_id, graceful)

    # --- children ------------------------------------------------------------------------

    @branches.engine_op
    async def start_child(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, *, key: str | None = None,
                          site: str | None = None, queue: str | None = None, timeout: float | None = None,
                          retry: RetryPolicy | None = None,
                          parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> ChildRef:
        """Start a child run and return its reference without waiting for it."""
        refs = await self._children.start(workflow, [input], [key], site, queue, timeout, retry, parent_close)
        return refs[0]

    @branches.engine_op
    async def start_children(self, workflow: WorkflowDef[Any, Any] | str, inputs: Iterable[Any], *,
                             key: Callable[[Any], str] | None = None, site: str | None = None,
                             queue: str | None = None, timeout: float | None = None,
                             retry: RetryPolicy | None = None,
                             parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> list[ChildRef]:
        """Start one child per input, all in one transaction (fan-out)."""
        items = list(inputs)
        child_keys: list[str | None] = [key(i) for i in items] if key is not None else [None] * len(items)
        return await self._children.start(workflow, items, child_keys, site, queue, timeout, retry, parent_close)

    @overload
    async def child(self, workflow: WorkflowDef[Any, T], input: Any = None, **options: Any) -> T: ...

    @overload
    async def child(self, workflow: str, input: Any = None, **options: Any) -> Any: ...

    @branches.engine_op
    async def child(self, workflow: WorkflowDef[Any, Any] | str, input: Any = None, **options: Any) -> Any:
        """Start a child and wait for its result (the synchronous form)."""
        ref = await self.start_child(workflow, input, **options)
        return await self._children.wait(ref)

    @branches.engine_op
    async def wait(self, ref: ChildRef) -> Any:
        """Suspend until the child is terminal; return its result or raise
        :class:`ChildFailedError` / :class:`ChildCancelledError`."""
        return await self._children.wait(ref)

    @branches.engine_op
    async def gather(self, refs: Sequence[ChildRef], *, return_exceptions: bool = False) -> list[Any]:
        """Wait for all children (fan-in); results in the order of ``refs``."""
        return await self._children.gather(refs, return_exceptions)

    async def as_completed(self, refs: Sequence[ChildRef]) -> AsyncIterator[ChildRef]:
        """Yield each child's reference as it finishes, first finished first; call
        ``ref.result()`` for its value (or its typed error)."""
        refs = list(refs)
        self._children.check_refs(refs)
        pending = {r.run_id: r for r in refs}
        while pending:
            ref = await self._first_completed(pending)
            del pending[ref.run_id]
            yield ref

    @branches.engine_op
    async def _first_completed(self, pending: dict[uuid.UUID, ChildRef]) -> ChildRef:
        return await self._children.first_completed(pending)

    @branches.engine_op
    async def map(self, workflow: WorkflowDef[Any, Any] | str, inputs: Iterable[Any], *, concurrency: int = 10,
                  key: Callable[[Any], str] | None = None, return_exceptions: bool = False,
                  site: str | None = None, queue: str | None = None, timeout: float | None = None,
                  retry: RetryPolicy | None = None,
                  parent_close: ParentClosePolicy | str = ParentClosePolicy.TERMINATE) -> list[Any]:
        """One child per input with at most ``concurrency`` unfinished at once (a sliding
        window: each finished child is replaced by the next input); results in input order.
        With ``return_exceptions`` a failed/cancelled child's typed error takes its place,
        otherwise the first one raises."""
        return await self._children.map(workflow, inputs, concurrency=concurrency, key=key,
                                        return_exceptions=return_exceptions, site=site, queue=queue,
                                        timeout=timeout, retry=retry, parent_close=parent_close)

    # --- waiting on any run (M:N) --------------------------------------------------------

    @branches.engine_op
    async def wait_run(self, run_id: uuid.UUID | str) -> Any:
        """Wait for any run (not only a child) to finish and return its result; many runs
        may wait on one. Raises RunFailedError-compatible ChildFailedError/ChildCancelledError."""
        try:
            target = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise ConfigurationError(f"{run_id!r} is not a run id (a UUID)") from None
        return await self._children.wait_run(target)

    # --- continue-as-new -----------------------------------------------------------------

    def continue_as_new(self, input: Any = None, *, workflow: WorkflowDef[Any, Any] | str | None = None) -> None:
        """End this run and continue as a new run with fresh history (raises; does not return)."""
        wf = resolve(workflow) if workflow is not None else self._ex.wf
        text, _ = roundtrip(input, wf.input_type, what=f"continue_as_new input of {wf.name!r}",
                            limit=self._ex.settings.payload_limit_bytes)
        raise ContinueAsNew(text, wf)
