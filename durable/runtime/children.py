"""Child runs (start, wait, fan-in) and waits on any run (M:N), for :class:`~durable.Context`.

Child ids are deterministic: uuid5 of the parent run id and the call site (its name, and
the caller's key or an ordinal per call site and branch), so a replay of the same call
reaches the same child and a parent never starts two children for one call. The child rows
and the parent's ``child_started`` events are one fenced transaction
(``durable_start_children``). Outcomes come back through the parent's waits
(durable/runtime/waits.py) and are journaled by the parent only.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import (CancellationRequested, ChildCancelledError, ChildFailedError, ConfigurationError, DurableError,
                      PayloadError, RunConflictError, RunNotFoundError, WorkflowNotFoundError)
from ..observe import hooks
from ..retry import RetryPolicy
from ..serde import roundtrip, validate
from ..store import waits as store_waits
from ..store.rows import Key, in_tree
from . import keys
from .host import RunView
from .registry import WorkflowDef, resolve
from .timing import positive
from .waits import Outcome, Waiter


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
    _children: "Children" = field(repr=False)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._children.wait(self).__await__()

    @property
    def done(self) -> bool:
        return self.run_id in self._children.ex.waits.outcomes

    def result(self) -> Any:
        """The child's result once known (after awaiting it or from as_completed);
        raises ChildFailedError / ChildCancelledError like awaiting does."""
        return self._children.value(self)


def outcome_value(oc: Outcome, workflow: str) -> Any:
    """A finished run's result (validated against its workflow's result type when it is
    registered here), or its typed error."""
    if oc.status == "completed":
        try:
            tp = resolve(workflow).result_type
        except WorkflowNotFoundError:
            tp = None
        return validate(oc.result, tp, what=f"result of {workflow!r}")
    if oc.status == "failed":
        raise ChildFailedError(oc.run_id, oc.error, workflow)
    reason = (oc.error or {}).get("reason") or (oc.error or {}).get("type") or "cancelled"
    raise ChildCancelledError(oc.run_id, reason)


class Children:
    """The child operations of one execution (``ctx.start_child`` and the rest)."""

    def __init__(self, ex: RunView) -> None:
        self.ex = ex

    # --- starting -----------------------------------------------------------------------

    async def start(self, workflow: WorkflowDef[Any, Any] | str, inputs: list[Any], child_keys: list[str | None],
                    site: str | None, queue: str | None, timeout: float | None,
                    retry: RetryPolicy | None, parent_close: ParentClosePolicy | str) -> list[ChildRef]:
        ex = self.ex
        wf = resolve(workflow)
        if inputs:
            await keys.op(ex)
            keys.give_back(ex)  # the cancellation point only; keys are taken below
        policy = ParentClosePolicy(parent_close).value if not isinstance(parent_close, ParentClosePolicy) \
            else parent_close.value
        if timeout is not None:
            timeout = positive(timeout, "child timeout")
        if site is not None and (not isinstance(site, str) or not site):
            raise ConfigurationError(f"site= must be a non-empty string naming the call site, got {site!r}")
        call_site = site or wf.name
        limit = ex.settings.payload_limit_bytes
        prepared = []
        for value, k in zip(inputs, child_keys):
            check_key(k)
            if not wf.takes_input and value is not None:
                raise PayloadError(f"workflow {wf.name!r} takes no input, but one was given")
            text, _ = roundtrip(value, wf.input_type, what=f"input of child workflow {wf.name!r}", limit=limit)
            prepared.append((text, k))
        refs: list[ChildRef] = []
        specs: list[dict[str, Any]] = []
        seen: set[uuid.UUID] = set()
        branch = keys.branch(ex)
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
                idents.append((child_id(ex, ident), ident))
            for (text, k), (cid, ident) in zip(prepared, idents):
                digest = hashlib.sha256(f"{wf.name}\0{text}".encode()).hexdigest()[:24]
                key = keys.take(ex)
                forked = ex.journal.at(key)
                if forked and forked[0].kind == "child_started" and forked[0].data.get("forked_from"):
                    # a fork keeps a child its origin run finished (its id derives from the origin)
                    cid = uuid.UUID(forked[0].data["child_id"])
                if cid in seen or ex.journal.child_keys.get(cid, key) != key:
                    raise RunConflictError(
                        f"child key {k!r} at site {call_site!r} is used twice in run {ex.run_id}; keys must be "
                        "unique per call site")
                found = f"start_child {wf.name!r} ({ident})"
                evs = ex.journal.at(key)
                if evs:
                    data = evs[0].data
                    if evs[0].kind != "child_started" or evs[0].name != wf.name or data["child_id"] != str(cid) \
                            or data.get("hash") != digest:
                        # live, this call may have failed on a taken child id and written nothing
                        await self._raise_taken([c for c, _ in idents])
                        if evs[0].kind == "child_started" and evs[0].name == wf.name:
                            what = "a different key/site" if data["child_id"] != str(cid) else "a different input"
                            raise ex.journal.nondeterminism(
                                key, f"child_started {wf.name!r} id={data['child_id']}", f"{found} with {what}")
                        raise ex.journal.nondeterminism(key, f"{evs[0].kind} {evs[0].name!r}", found)
                else:
                    specs.append({"id": cid, "workflow": wf.name, "version": wf.version,
                                  "queue": queue or wf.queue, "input": text, "key": key, "hash": digest,
                                  "policy": policy, "timeout": timeout or wf.execution_timeout,
                                  "retry": retry.to_doc() if retry else None, "child_key": k})
                seen.add(cid)
                refs.append(ChildRef(cid, wf.name, ex.run_id, key, self))
            if specs:
                await ex.journal.start_children(specs)
        except BaseException:
            # nothing was written: a caught error leaves no gap in positions or ordinals
            branch.restore(before)
            raise
        if specs:
            if specs[0]["timeout"]:
                ex.host.note_deadline(specs[0]["timeout"])  # claim-independent: the deadline is known now
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
        ex = self.ex
        async with ex.journal.conn() as conn:
            taken = await store_waits.taken_child_id(conn, ex.tree_key, ids, ex.run_id)
        if taken is not None:
            raise RunConflictError(
                f"child id {taken.id} is already taken by run of workflow {taken.workflow} (parent "
                f"{taken.parent_id or 'none'}). Child ids derive from the parent, the call site and key=; choose "
                "another key or site= so the id is unique")

    # --- waiting ------------------------------------------------------------------------

    def check_refs(self, refs: Sequence[ChildRef]) -> None:
        for r in refs:
            if not isinstance(r, ChildRef):
                raise ConfigurationError(f"expected a ChildRef from ctx.start_child, got {r!r}")
            if r.parent_run_id != self.ex.run_id:
                raise ConfigurationError(
                    f"child reference {r.run_id} belongs to run {r.parent_run_id}, not to this run "
                    f"{self.ex.run_id}; to wait on another run's child use ctx.wait_run(run_id)")

    async def await_known(self, ids: list[uuid.UUID], mode: str = "all", key: Key | None = None) -> None:
        """Wait until the outcomes of ``ids`` are known (``mode`` 'all' or 'any')."""
        ex = self.ex
        outcomes = ex.waits.outcomes
        if ex.interrupt_seq is not None and key is None:
            # replaying a wait that a graceful cancel interrupted: it is the first wait
            # whose outcomes were not all journaled before the interruption
            cut = ex.interrupt_seq
            ok = [i in outcomes and outcomes[i].before(cut) for i in ids]
            if not (all(ok) if mode == "all" else any(ok)):
                ex.interrupt_seq = None
                raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
        missing = tuple(i for i in ids if i not in outcomes)
        if missing and (mode == "all" or len(missing) == len(ids)):
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            await ex.wait(Waiter("children", fut, ids=missing, mode=mode, key=key))

    def value(self, ref: ChildRef) -> Any:
        oc = self.ex.waits.outcomes.get(ref.run_id)
        if oc is None:
            raise DurableError(f"child {ref.run_id} has not finished yet; await it first")
        return outcome_value(oc, ref.workflow)

    async def wait(self, ref: ChildRef) -> Any:
        self.check_refs([ref])
        await self.await_known([ref.run_id])
        return self.value(ref)

    async def gather(self, refs: Sequence[ChildRef], return_exceptions: bool) -> list[Any]:
        refs = list(refs)
        self.check_refs(refs)
        await self.await_known([r.run_id for r in refs])
        out: list[Any] = []
        for r in refs:
            try:
                out.append(self.value(r))
            except (ChildFailedError, ChildCancelledError) as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
        return out

    async def as_completed(self, refs: Sequence[ChildRef]) -> AsyncIterator[ChildRef]:
        refs = list(refs)
        self.check_refs(refs)
        pending = {r.run_id: r for r in refs}
        while pending:
            ref = await self.first_completed(pending)
            del pending[ref.run_id]
            yield ref

    async def first_completed(self, pending: dict[uuid.UUID, ChildRef]) -> ChildRef:
        """The earliest journaled outcome among ``pending`` (waiting for one if none is
        known). Journal order, so a replay picks the same child as the live run did."""
        outcomes = self.ex.waits.outcomes
        while True:
            # replaying up to a wait a graceful cancel interrupted: outcomes journaled after
            # the interruption were not known to the live run here
            cut = self.ex.interrupt_seq
            known = [r for i, r in pending.items() if i in outcomes and (cut is None or outcomes[i].before(cut))]
            if known:
                return min(known, key=lambda r: outcomes[r.run_id].order)
            await self.await_known(list(pending), mode="any")

    async def map(self, workflow: WorkflowDef[Any, Any] | str, inputs: Iterable[Any], *, concurrency: int,
                  key: Callable[[Any], str] | None, return_exceptions: bool, site: str | None,
                  queue: str | None, timeout: float | None, retry: RetryPolicy | None,
                  parent_close: ParentClosePolicy | str) -> list[Any]:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive int, got {concurrency!r}")
        items = list(inputs)
        child_keys: list[str | None] = [key(i) for i in items] if key is not None else [None] * len(items)
        for k in child_keys:  # refuse bad keys before any child starts
            check_key(k)
        resolve(workflow)
        results: list[Any] = [None] * len(items)
        index: dict[uuid.UUID, int] = {}
        inflight: dict[uuid.UUID, ChildRef] = {}
        nxt = 0
        while nxt < len(items) or inflight:
            room = concurrency - len(inflight)
            if room > 0 and nxt < len(items):
                refs = await self.start(workflow, items[nxt: nxt + room], child_keys[nxt: nxt + room], site,
                                        queue, timeout, retry, parent_close)
                for i, r in enumerate(refs):
                    index[r.run_id] = nxt + i
                    inflight[r.run_id] = r
                nxt += len(refs)
                continue
            ref = await self.first_completed(inflight)
            del inflight[ref.run_id]
            try:
                results[index[ref.run_id]] = ref.result()
            except (ChildFailedError, ChildCancelledError) as exc:
                if not return_exceptions:
                    raise
                results[index[ref.run_id]] = exc
        return results

    # --- any run (M:N) ------------------------------------------------------------------

    async def wait_run(self, target: uuid.UUID) -> Any:
        ex = self.ex
        key = await keys.op(ex)
        evs = ex.journal.at(key)
        if evs:
            if evs[0].kind != "wait_started" or evs[0].data["run_id"] != str(target):
                # live, this call may have failed (no such run) and written nothing
                async with ex.journal.conn() as conn:
                    exists = await store_waits.run_target(conn, target)
                if exists is None:
                    keys.give_back(ex)
                    raise RunNotFoundError(target)
                expected = f"wait_run {evs[0].data['run_id']}" if evs[0].kind == "wait_started" \
                    else f"{evs[0].kind} {evs[0].name!r}"
                raise ex.journal.nondeterminism(key, expected, f"wait_run {target}")
            workflow = evs[0].data.get("workflow") or ""
            chain = uuid.UUID(evs[0].data.get("chain_root_id") or str(target))
        else:
            async with ex.journal.conn() as conn:
                found = await store_waits.run_target(conn, target)
                if found is None:
                    keys.give_back(ex)
                    raise RunNotFoundError(target)
                workflow, chain = found.workflow, found.chain_root_id
                # registered on the chain: any link's terminal wakes us, whenever it happens
                await store_waits.register_wait(conn, chain, found.tree_key, ex.run_id, ex.tree_key)
            await ex.journal.append(key, "wait_started", None, {"run_id": str(target), "workflow": workflow,
                                                                "chain_root_id": str(chain)})
        ex.waits.cross_keys[chain] = key
        await self.await_known([chain], key=key)
        return outcome_value(ex.waits.outcomes[chain], workflow)


def child_id(ex: RunView, ident: str) -> uuid.UUID:
    """A child's deterministic id: uuid5 of the parent and the call site's ident, in the
    parent's tree (trees made before schema version 7 keep plain uuid5 ids)."""
    cid = uuid.uuid5(ex.run_id, ident)
    return in_tree(ex.root_id, cid) if ex.grafted else cid


def check_key(k: Any) -> None:
    if k is not None and not isinstance(k, str):
        raise ConfigurationError(
            f"child key must be a string (got {type(k).__name__} {k!r}); use e.g. key=f'order-{{id}}'")
