"""The workflow catalog: the registry table seen from the runtime.

A process that executes runs publishes the workflows it registered (name, version, queue,
the JSON schemas of input and result from their type hints, the execution timeout) when its
engine opens: one read, and one write only when a definition changed. A pure client that
never imported a workflow looks its name up here, checks the plain-JSON input against the
registered schema (with ``jsonschema``), and starts the run on the registered queue and
version; the definition it gets back cannot execute (the run executes where it is
registered).
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import TypeAdapter

from ..errors import PayloadError, WorkflowNotFoundError
from ..store import registry as store_registry
from ..store.connections import Conn
from ..store.rows import RegisteredWorkflow
from .registry import WorkflowDef, all_workflows

log = logging.getLogger(__name__)

_MAX_PROBLEMS = 5
_MAX_NAMES = 100


def json_schema(tp: Any) -> dict[str, Any] | None:
    """The JSON schema (draft 2020-12) pydantic makes of a type hint; None when there is no
    hint (``Any``) or pydantic cannot describe it (then the input is not checked by name)."""
    if tp is None or tp is Any:
        return None
    try:
        return TypeAdapter(tp).json_schema()
    except Exception:  # arbitrary classes, callables, ...: pydantic has no schema for them
        return None


_described: dict[tuple[Any, ...], RegisteredWorkflow] = {}


def describe(wf: WorkflowDef[Any, Any]) -> RegisteredWorkflow:
    """The registry row of a workflow registered in this process (memoised per definition)."""
    memo = (wf.name, wf.version, wf.fn, wf.queue, wf.execution_timeout)  # the types come from fn
    found = _described.get(memo)
    if found is None:
        found = _described[memo] = RegisteredWorkflow(
            name=wf.name, version=wf.version, queue=wf.queue, takes_input=wf.takes_input,
            input_schema=json_schema(wf.input_type) if wf.takes_input else None,
            result_schema=json_schema(wf.result_type), execution_timeout_s=wf.execution_timeout)
    return found


async def publish(conn: Conn, owner: str, workflows: Iterable[WorkflowDef[Any, Any]]) -> list[str]:
    """Write the definitions of ``workflows`` that the registry lacks or holds differently
    (one read, at most one write); returns the names written."""
    mine = [describe(wf) for wf in workflows]
    if not mine:
        return []
    stored = {w.name: w for w in await store_registry.registered(conn, [w.name for w in mine])}
    changed = [w for w in mine if w.name not in stored or not stored[w.name].same_definition(w)]
    if changed:
        await store_registry.register(conn, changed, owner)
        log.info("registered %d workflow definition(s) in the registry: %s", len(changed),
                 ", ".join(f"{w.name} v{w.version}" for w in changed), extra={"owner": owner})
    return [w.name for w in changed]


def _not_here(*args: Any, **kwargs: Any) -> NoReturn:
    raise WorkflowNotFoundError("this workflow was started by name from the registry; it executes in a process "
                                "that registers it, not here")


def definition(row: RegisteredWorkflow) -> WorkflowDef[Any, Any]:
    """A stand-in definition for starting a run of a workflow registered elsewhere (it never
    executes here: its input is checked with :func:`check_input`, its result is plain JSON)."""
    return WorkflowDef(name=row.name, version=row.version, fn=_not_here, takes_input=row.takes_input,
                       input_type=None, result_type=None, queue=row.queue,
                       execution_timeout=row.execution_timeout_s)


async def lookup(conn: Conn, name: str) -> RegisteredWorkflow:
    """The registered definition of ``name``; WorkflowNotFoundError naming the closest
    registered names and the fix when there is none."""
    row = await store_registry.lookup(conn, name)
    if row is not None:
        return row
    known = sorted(set(await store_registry.names(conn)) | set(all_workflows()))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        hint = f"; the closest registered names: {', '.join(repr(c) for c in close)}"
    else:
        shown = ", ".join(known[:_MAX_NAMES]) + (f", … ({len(known)} in all)" if len(known) > _MAX_NAMES else "")
        hint = f"; registered: {shown or 'none'}"
    raise WorkflowNotFoundError(
        f"no workflow named {name!r} is registered in this process or in the database's workflow registry{hint}. "
        "Fix the name; or start a worker that registers it (durable-dispatcher --module MODULE, or any "
        "Engine(execute=True) in a process that imports the module: it registers its workflows when it opens); "
        "or import the module that defines it in this process.")


class Recent:
    """The registered definitions one engine read, kept for ``ttl`` seconds so a client
    starting many runs by name reads the registry once per name and period (a definition
    changed meanwhile is seen within ``ttl``; an unknown name is never kept)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._rows: dict[str, tuple[float, RegisteredWorkflow]] = {}

    def get(self, name: str) -> RegisteredWorkflow | None:
        found = self._rows.get(name)
        if found is None or time.monotonic() - found[0] > self.ttl:
            return None
        return found[1]

    def put(self, row: RegisteredWorkflow) -> None:
        self._rows[row.name] = (time.monotonic(), row)


_validators: dict[tuple[str, int, Any], Draft202012Validator] = {}


def _validator(row: RegisteredWorkflow) -> Draft202012Validator:
    memo = (row.name, row.version, row.updated_at)
    found = _validators.get(memo)
    if found is None:
        assert row.input_schema is not None
        Draft202012Validator.check_schema(row.input_schema)
        if len(_validators) > 1000:
            _validators.clear()
        found = _validators[memo] = Draft202012Validator(row.input_schema)
    return found


def check_input(row: RegisteredWorkflow, value: Any) -> None:
    """Refuse plain-JSON ``value`` that fails the workflow's registered input schema, naming
    the JSON path and the schema's complaint (nothing is written)."""
    what = f"input of workflow {row.name!r} (version {row.version}, as registered by {row.registered_by or '?'})"
    if not row.takes_input:
        if value is not None:
            raise PayloadError(f"{what}: the workflow takes no input (its signature is (ctx)), but one was given; "
                               "start it without input")
        return
    if row.input_schema is None:
        return
    try:
        errors = sorted(_validator(row).iter_errors(value), key=lambda e: (len(e.path), list(map(str, e.path))))
    except SchemaError as exc:  # a schema pydantic made is valid; a broken row should not block starts
        log.warning("workflow %s: the registered input schema is invalid (%s); input not checked", row.name,
                    exc.message, extra={"workflow": row.name})
        return
    if errors:
        problems = "; ".join(f"at {e.json_path}: {e.message}" for e in errors[:_MAX_PROBLEMS])
        more = f" (and {len(errors) - _MAX_PROBLEMS} more)" if len(errors) > _MAX_PROBLEMS else ""
        raise PayloadError(f"{what} fails its registered JSON schema: {problems}{more}. Pass input that matches "
                           "the schema (its input type in the workflow's code); nothing was written.")
