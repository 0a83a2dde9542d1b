"""Workflow and step registration: stable names, versions, type hints for payloads."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar, overload

from ..errors import RegistrationError, ScheduleError, StepCallError, WorkflowNotFoundError
from ..retry import RetryPolicy
from ..ticks import TickSpec
from . import branches

I = TypeVar("I")  # noqa: E741  (a workflow's input)
R = TypeVar("R")  # a workflow's or step's result
R_co = TypeVar("R_co", covariant=True)


@dataclass
class WorkflowDef(Generic[I, R]):
    """A registered workflow: ``async def fn(ctx, input) -> result``."""

    name: str
    version: int
    fn: Callable[..., Awaitable[R]]
    takes_input: bool
    input_type: Any
    result_type: Any
    queue: str = "default"
    execution_timeout: float | None = None
    schedule: str | timedelta | None = None  # declared schedule: a cron expression or an interval (issue 15)
    schedule_timezone: str = "UTC"

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    async def __call__(self, *args: Any, **kwargs: Any) -> R:  # direct call, e.g. in unit tests
        return await self.fn(*args, **kwargs)


@dataclass
class StepDef(Generic[R]):
    """A step: any sync or async function, with a stable name and optional policy."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy | None = None
    timeout: float | None = None
    result_type: Any = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The plain function (unit tests, or from another step); inside a workflow a step
        runs through ``ctx.step``, so a direct call there raises :class:`StepCallError`."""
        if branches.in_workflow():
            raise StepCallError(self.name, getattr(self.fn, "__name__", "the_step"))
        return self.fn(*args, **kwargs)


_workflows: dict[str, WorkflowDef[Any, Any]] = {}  # name -> its newest version (what new runs take)
_versions: dict[str, dict[int, WorkflowDef[Any, Any]]] = {}  # name -> every version registered here


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward refs: validate nothing rather than refuse
        return {}


class _WorkflowDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[[Any, I], Awaitable[R]]) -> WorkflowDef[I, R]: ...

    @overload
    def __call__(self, fn: Callable[[Any], Awaitable[R]]) -> WorkflowDef[None, R]: ...


class _StepDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[..., Awaitable[R]]) -> StepDef[R]: ...

    @overload
    def __call__(self, fn: Callable[..., R]) -> StepDef[R]: ...


def workflow(name: str, *, version: int = 1, queue: str = "default",
             execution_timeout: float | None = None, schedule: str | timedelta | None = None,
             schedule_timezone: str = "UTC") -> _WorkflowDecorator:
    """Register ``async def fn(ctx, input)`` as a workflow under a stable ``name``.

    The name (not the Python function name) is what the database stores, so renaming or
    moving the function does not strand running runs. Several versions of one name may be
    registered in one process: a run stays on the version it started with (this process
    claims only runs of the versions it registers) and new runs take the newest. Register
    a new version when the code changes in a way running histories would not replay (or
    guard the change with ``ctx.patched``).

    ``schedule`` (a cron expression, or a ``timedelta`` interval; ``schedule_timezone`` for
    cron) declares a schedule with the workflow's name as its id, upserted when an engine
    that executes runs opens (see ``engine.schedules``).
    """
    if not isinstance(name, str) or not name.strip():
        raise RegistrationError("@durable.workflow needs a stable non-empty name, e.g. @durable.workflow('orders.charge')")
    if not isinstance(version, int) or version < 1:
        raise RegistrationError(f"workflow {name!r}: version must be a positive int (got {version!r})")
    if execution_timeout is not None and not (0 < execution_timeout <= 10 * 365 * 86400):
        raise RegistrationError(f"workflow {name!r}: execution_timeout must be > 0 seconds and at most 10 years")
    if schedule is not None:
        try:
            if isinstance(schedule, str):
                TickSpec.parse(schedule, None, schedule_timezone)
            else:
                TickSpec.parse(None, schedule, schedule_timezone)
        except ScheduleError as exc:
            raise RegistrationError(f"workflow {name!r}: schedule: {exc}") from None

    def decorate(fn: Callable[..., Awaitable[Any]]) -> WorkflowDef[Any, Any]:
        if not inspect.iscoroutinefunction(fn):
            raise RegistrationError(f"workflow {name!r}: {fn.__qualname__} must be an `async def` function")
        params = list(inspect.signature(fn).parameters.values())
        if not params or len(params) > 2:
            raise RegistrationError(
                f"workflow {name!r}: the signature must be (ctx) or (ctx, input); got {len(params)} parameters. "
                "Bundle several inputs into one pydantic model or dict."
            )
        hints = _hints(fn)
        takes_input = len(params) == 2
        wf: WorkflowDef[Any, Any] = WorkflowDef(
            name=name, version=version, fn=fn, takes_input=takes_input,
            input_type=hints.get(params[1].name) if takes_input else None,
            result_type=hints.get("return"), queue=queue, execution_timeout=execution_timeout,
            schedule=schedule, schedule_timezone=schedule_timezone,
        )
        return register(wf)

    return decorate


def register(wf: WorkflowDef[I, R]) -> WorkflowDef[I, R]:
    """Put a definition in this process's registry (what ``@durable.workflow`` does; tests
    that unregister a workflow put it back this way). Another version of a registered name is
    added next to it; the same version again replaces it only when it is the same function."""
    name, version, fn = wf.name, wf.version, wf.fn
    versions = _versions.setdefault(name, {})
    existing = versions.get(version)
    if existing is not None and not (existing.fn.__module__ == fn.__module__
                                     and existing.fn.__qualname__ == fn.__qualname__):
        raise RegistrationError(
            f"workflow {name!r} version {version} is registered twice by different functions "
            f"({existing.fn.__module__}.{existing.fn.__qualname__} and {fn.__module__}.{fn.__qualname__}); "
            "give one of them another version (version=...) or another name"
        )
    versions[version] = wf
    _workflows[name] = versions[max(versions)]  # new runs take the newest version
    return wf


@overload
def step(name: Callable[..., Awaitable[R]], *, retry: RetryPolicy | None = None,
         timeout: float | None = None) -> StepDef[R]: ...


@overload
def step(name: Callable[..., R], *, retry: RetryPolicy | None = None, timeout: float | None = None) -> StepDef[R]: ...


@overload
def step(name: str | None = None, *, retry: RetryPolicy | None = None,
         timeout: float | None = None) -> _StepDecorator: ...


def step(name: str | Callable[..., Any] | None = None, *, retry: RetryPolicy | None = None,
         timeout: float | None = None) -> Any:
    """Mark a function as a step (``@durable.step`` or ``@durable.step("name", retry=...)``).

    Steps run at least once; their outcome is journaled exactly once.
    """
    if timeout is not None and not (0 < timeout <= 86400 * 365):
        raise RegistrationError("step timeout must be > 0 seconds and at most a year")

    def make(fn: Callable[..., Any], step_name: str | None) -> StepDef[Any]:
        if isinstance(fn, StepDef):
            return fn
        if not callable(fn):
            raise RegistrationError(f"@durable.step needs a function, got {fn!r}")
        return StepDef(name=step_name or fn.__qualname__, fn=fn, retry=retry, timeout=timeout,
                       result_type=_hints(fn).get("return"))

    if callable(name):
        return make(name, None)
    return lambda fn: make(fn, name)


def as_step(fn: Callable[..., Any] | StepDef[Any], name: str | None = None) -> StepDef[Any]:
    if isinstance(fn, StepDef):
        return fn if name is None or name == fn.name else StepDef(name, fn.fn, fn.retry, fn.timeout, fn.result_type)
    if not callable(fn):
        raise TypeError(f"ctx.step needs a function or @durable.step, got {fn!r}")
    return StepDef(name=name or str(getattr(fn, "__qualname__", repr(fn))), fn=fn,
                   result_type=_hints(fn).get("return"))


def get_workflow(name: str) -> WorkflowDef[Any, Any]:
    wf = _workflows.get(name)
    if wf is None:
        known = ", ".join(sorted(_workflows)) or "none"
        raise WorkflowNotFoundError(
            f"no workflow named {name!r} is registered in this process (registered: {known}). "
            "Import the module that defines it (the dispatcher's --module flag) or fix the name."
        )
    return wf


def resolve(ref: WorkflowDef[I, R] | str) -> WorkflowDef[I, R]:
    if isinstance(ref, WorkflowDef):
        return _workflows.get(ref.name, ref)
    if isinstance(ref, str):
        return get_workflow(ref)
    raise WorkflowNotFoundError(
        f"{ref!r} is not a workflow: pass a function decorated with @durable.workflow(...) or its registered name"
    )


def all_workflows() -> dict[str, WorkflowDef[Any, Any]]:
    """Every registered workflow name and its newest version."""
    return dict(_workflows)


def all_versions() -> list[WorkflowDef[Any, Any]]:
    """Every registered (workflow, version), by name then version."""
    return [wf for name in sorted(_versions) for _, wf in sorted(_versions[name].items())]


def get_version(name: str, version: int) -> WorkflowDef[Any, Any] | None:
    """The definition of ``name`` at ``version`` registered here (None when there is none)."""
    return _versions.get(name, {}).get(version)


def unregister(name: str, version: int | None = None) -> None:
    """Remove a registration (every version, or one; tests that redefine workflows use this)."""
    versions = _versions.get(name, {})
    if version is None:
        versions.clear()
    else:
        versions.pop(version, None)
    if versions:
        _workflows[name] = versions[max(versions)]
    else:
        _versions.pop(name, None)
        _workflows.pop(name, None)

