"""The journaled form of a failure: an error document with its cause chain.

A run that failed because its child's step raised ``ApplicationError("card refused",
type="Declined", details={...})`` stores::

    {"type": "ChildFailedError", "message": "...", "run_id": "<run>", "workflow": "orders",
     "traceback": "...", "root": {"type": "Declined", "message": "card refused"},
     "cause": {"type": "StepError", "step": "charge", "attempts": 1, "run_id": "<child>",
               "workflow": "payment", "message": "...",
               "cause": {"type": "Declined", "message": "card refused",
                         "non_retryable": true, "details": {...}}}}

Each link has the application's own ``type`` (``KeyError``, ``ApplicationError``'s
``type=``), ``message``, and where known ``non_retryable`` and ``details``; a run's own
link (the top, and a child's failure nested in its parent's) its ``run_id`` and
``workflow``. Only the top link keeps a traceback (it already includes the chained
ones), and ``root`` repeats the innermost link's type and message so readers (the CLI's
run list, SQL) need not walk the chain. Documents are bounded: long messages, large
details and deep chains are cut with a marker (the root link is always kept).
:class:`durable.errors.FailureInfo` reads a document back as typed links.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import ApplicationError, RunFailedError, StepError

MAX_TRACEBACK = 8000
MAX_MESSAGE = 2000       # characters of one link's message
MAX_DETAILS = 4096       # bytes of one link's details, as JSON
MAX_LINKS = 8            # links kept in a chain (the outermost ones and the root)


def root_line(error: dict[str, Any]) -> str:
    """``Type: message`` of an error document's root cause (the innermost link of its cause
    chain, e.g. ``Declined: card refused``), else of the document itself."""
    root = error.get("root")
    if isinstance(root, dict) and root.get("type"):
        error = root
    kind = error.get("type") or "Error"
    msg = error.get("message") or error.get("reason") or ""
    return f"{kind}: {msg}" if msg else str(kind)


def error_doc(exc: BaseException) -> dict[str, Any]:
    """The journaled form of an exception: type, message, traceback, and its cause chain."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    doc = _link(exc)
    doc["traceback"] = tb[-MAX_TRACEBACK:]
    return bounded(doc)


def bounded(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its chain cut to MAX_LINKS (outermost links and the root kept, a marker
    link between), nested links without tracebacks or ``root``, and, when it has a cause,
    ``root`` set to the innermost link's type and message."""
    links: list[dict[str, Any]] = []
    link: Any = doc
    while isinstance(link, dict):
        links.append({k: v for k, v in link.items() if k != "cause"})
        link = link.get("cause")
    if len(links) > MAX_LINKS:
        left_out = len(links) - MAX_LINKS + 1
        marker = {"type": "ChainTruncated", "message": f"{left_out} link(s) of the cause chain left out",
                  "truncated": left_out}
        links = links[: MAX_LINKS - 2] + [marker, links[-1]]
    for nested in links[1:]:
        nested.pop("traceback", None)
        nested.pop("root", None)
    out: dict[str, Any] | None = None
    for one in reversed(links):
        if out is not None:
            one["cause"] = out
        out = one
    assert out is not None
    if len(links) > 1:
        out["root"] = {"type": links[-1].get("type"), "message": links[-1].get("message", "")}
    return out


def _link(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": exc.type if isinstance(exc, ApplicationError) else type(exc).__name__,
        "module": type(exc).__module__,
        "message": _clip(str(exc)),
    }
    cause: dict[str, Any] | None = None
    if isinstance(exc, ApplicationError):
        doc["non_retryable"] = exc.non_retryable
        if exc.details is not None:
            doc["details"] = _details(exc.details)
    if isinstance(exc, StepError):  # the step's own journaled error is the next link
        doc["step"] = exc.step
        doc["attempts"] = exc.attempts
        cause = dict(exc.error) if exc.error else None
    elif isinstance(exc, RunFailedError):  # ChildFailedError too: the run's error document
        cause = dict(exc.error) if exc.error else None
        if cause is not None:
            cause.setdefault("run_id", str(exc.run_id))
            if exc.workflow:
                cause.setdefault("workflow", exc.workflow)
    elif exc.__cause__ is not None and depth < MAX_LINKS:  # `raise X from Y` in application code
        cause = _link(exc.__cause__, depth + 1)
    if cause is not None:
        doc["cause"] = cause
        # a wrapper is as final as what it wraps: a non-retryable root stops retry policies
        if not isinstance(exc, ApplicationError) and _non_retryable(cause):
            doc["non_retryable"] = True
    return doc


def _non_retryable(doc: Any) -> bool:
    return isinstance(doc, dict) and bool(doc.get("non_retryable"))


def _clip(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}… [{len(text) - MAX_MESSAGE} more characters cut]"


def _details(details: Any) -> Any:
    try:
        plain = to_jsonable_python(details)
        size = len(json.dumps(plain, separators=(",", ":")))
    except (PydanticSerializationError, TypeError, ValueError):
        return _clip(repr(details))
    if size > MAX_DETAILS:
        return f"<details left out: {size} bytes as JSON, over {MAX_DETAILS}>"
    return plain
