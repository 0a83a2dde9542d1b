"""Concurrent branches inside one workflow: deterministic operation keys.

A workflow may run branches concurrently (``asyncio.gather``, ``asyncio.create_task``,
``asyncio.TaskGroup``) and each branch may do several durable operations. Live, branches
interleave in whatever order their operations complete; a replay resolves journaled
operations at once, in another order. So an operation cannot be named by a global counter.

Instead every task of a workflow is a *branch* with a path: the workflow's own task is the
main branch (path ``()``); the n-th task a branch creates is its child branch ``path + (n,)``.
Task creation order within one branch is the branch's own sequential code, so paths are the
same live and on replay. An operation is keyed by its branch and its index in the branch:
an int for the main branch (the classic position) and ``"0.1:2"`` for branch ``(0, 1)``'s
third operation. Child-run ordinals per call site are kept per branch too.

Branches are told apart at task creation by a task factory installed on the event loop
(chaining any factory already there); only tasks created while a workflow branch is
current are touched. The engine's own tasks are created outside any branch
(:func:`outside`), and step code runs outside too, so what a step does never shifts the
workflow's task numbering.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from ..errors import DurableError

# The branch that owns the tasks created now: the running workflow task's branch, or None
# in engine code (a durable operation's own work, the engine's tasks, step code).
_current: contextvars.ContextVar["Branch | None"] = contextvars.ContextVar("durable_branch", default=None)
# The branch of each workflow task, by task (what a durable operation is called from).
_by_task: "weakref.WeakKeyDictionary[asyncio.Task[Any], Branch]" = weakref.WeakKeyDictionary()
# Inside a durable operation: the branch its caller's context named (for error messages).
_op_caller: contextvars.ContextVar["Branch | None"] = contextvars.ContextVar("durable_op_caller", default=None)

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


class BranchError(DurableError):
    """A durable operation was called where the engine cannot name it deterministically."""


class Branch:
    """One task of a workflow: its path, its next operation index, its child ordinals."""

    __slots__ = ("owner", "path", "index", "spawned", "site_counts", "task", "label", "family")

    def __init__(self, owner: object, path: tuple[int, ...], task: "asyncio.Task[Any] | None",
                 family: "set[asyncio.Task[Any]] | None" = None) -> None:
        self.owner = owner          # the Execution this branch belongs to
        self.family: set[asyncio.Task[Any]] = family if family is not None else set()  # its live tasks
        self.path = path
        self.index = 0              # operations taken
        self.spawned = 0            # tasks created
        self.site_counts: dict[str, int] = {}
        self.task = task
        self.label = ".".join(map(str, path))

    @property
    def main(self) -> bool:
        return not self.path

    def key(self, index: int) -> int | str:
        return index if not self.path else f"{self.label}:{index}"

    def take(self) -> int | str:
        key = self.key(self.index)
        self.index += 1
        return key

    def next_key(self) -> int | str:
        return self.key(self.index)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        return self.index, dict(self.site_counts)

    def restore(self, snap: tuple[int, dict[str, int]]) -> None:
        self.index, self.site_counts = snap[0], dict(snap[1])

    def spawn(self) -> "Branch":
        child = Branch(self.owner, self.path + (self.spawned,), None, self.family)
        self.spawned += 1
        return child


def enter_main(owner: object) -> Branch:
    """Make the current task the main branch of ``owner``'s workflow (called first thing in
    the workflow's task) and make sure task creation is tracked on this loop."""
    install(asyncio.get_running_loop())
    task = asyncio.current_task()
    branch = Branch(owner, (), task)
    if task is not None:
        _adopt(branch, task)
    _current.set(branch)
    return branch


def _adopt(branch: Branch, task: "asyncio.Task[Any]") -> None:
    branch.task = task
    branch.family.add(task)
    _by_task[task] = branch
    task.add_done_callback(branch.family.discard)


def engine_op(fn: _F) -> _F:
    """Decorate a durable operation (a ``Context`` method): its own work runs as engine
    code, so tasks created while it runs (the engine's driver, a connection pool waiting
    for a free connection through ``asyncio.wait_for``) are not the workflow's and never
    shift its branch numbering. The calling branch is found by its task (:func:`current`)."""

    @functools.wraps(fn)
    async def op(*args: Any, **kwargs: Any) -> Any:
        caller = _current.get()
        if caller is None:  # engine code already (an operation calling another)
            return await fn(*args, **kwargs)
        token, seen = _current.set(None), _op_caller.set(caller)
        try:
            return await fn(*args, **kwargs)
        finally:
            _op_caller.reset(seen)
            _current.reset(token)

    return op  # type: ignore[return-value]


def runnable(family: "set[asyncio.Task[Any]]") -> bool:
    """True when a task of the workflow can run now: it is scheduled, or the future it
    awaits is resolved (its wake-up is on the way). False when every one of them awaits
    something unresolved (a durable wait, another of its tasks, a step's I/O)."""
    for task in family:
        waiting = getattr(task, "_fut_waiter", None)  # what a suspended task awaits (CPython)
        if not task.done() and (waiting is None or waiting.done()):
            return True
    return False


def in_workflow() -> bool:
    """True in a workflow's own code (not in step code, durable operations or the engine's tasks)."""
    return _current.get() is not None


def current(owner: object) -> Branch:
    """The branch of the running task, which must belong to ``owner``'s workflow."""
    task = asyncio.current_task()
    branch = _by_task.get(task) if task is not None else None
    if branch is not None and branch.owner is owner:
        return branch
    named = _op_caller.get() or _current.get()
    if named is None or named.owner is not owner:
        raise BranchError(
            "a durable operation (ctx.step, ctx.sleep, ctx.start_child, ...) was called outside the "
            "workflow's own tasks: call ctx operations only from the workflow function or from tasks it "
            "creates with asyncio.create_task / asyncio.gather / asyncio.TaskGroup, not from threads, "
            "callbacks or another workflow")
    raise BranchError(
        "a durable operation ran in a task the engine did not see being created (the event loop's task "
        "factory was replaced after the engine started, or the task was created in another context); "
        "create workflow tasks with asyncio.create_task / asyncio.gather / asyncio.TaskGroup and do not "
        "replace the loop's task factory while workflows run")


class outside:
    """``with outside():`` code that must not count as the workflow's own (step code, the
    engine's background tasks): tasks created inside belong to no branch."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(None)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def outside_context() -> contextvars.Context:
    """A copy of the current context with no branch (for ``create_task(context=...)``)."""
    ctx = contextvars.copy_context()
    ctx.run(_current.set, None)
    return ctx


def create_outside(coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> "asyncio.Task[Any]":
    """Create an engine task that belongs to no workflow branch."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=outside_context())


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Install the branch-tracking task factory on ``loop`` (idempotent; chains a factory
    that was there already)."""
    factory = loop.get_task_factory()
    if factory is not None and getattr(factory, "_durable_branches", False):
        return
    previous = factory

    def task_factory(lp: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        # the branch of the context the task will run in (an explicit context, as
        # create_outside passes, decides; else the creator's)
        given = kwargs.get("context")
        parent = given.get(_current) if given is not None else _current.get()
        if parent is not None:
            context = given.copy() if given is not None else contextvars.copy_context()
            child = parent.spawn()
            context.run(_current.set, child)
            kwargs["context"] = context
            task = previous(lp, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=lp, **kwargs)
            _adopt(child, cast("asyncio.Task[Any]", task))
            return task
        if previous is not None:
            return previous(lp, coro, **kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    task_factory._durable_branches = True  # type: ignore[attr-defined]
    loop.set_task_factory(task_factory)
