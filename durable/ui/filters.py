"""The runs page's filters: query parameters read into the keywords of
``engine.list_runs`` (a malformed one: :class:`BadFilter`, naming the parameter and the
form it accepts; the page answers 400 and reads nothing)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.datastructures import QueryParams

from ..attributes import filter_value
from ..durations import FORMS, parse_duration
from ..errors import ConfigurationError
from ..store.search import STATUSES, decode_cursor

PAGE_SIZES = (20, 50, 100, 200, 500)
MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")


class BadFilter(Exception):
    """A filter the page cannot read: ``name`` is the query parameter, ``accepted`` its form."""

    def __init__(self, name: str, value: str, accepted: str) -> None:
        super().__init__(f"filter {name}={value!r} is not valid; it takes {accepted}")
        self.name = name
        self.value = value
        self.accepted = accepted


@dataclass
class RunsQuery:
    """The runs page's filters as given (echoed into the form) and as engine keywords."""

    status: list[str] = field(default_factory=list)
    workflow: str = ""
    queue: str = ""
    since: str = ""
    created_from: str = ""
    created_to: str = ""
    attrs: list[str] = field(default_factory=list)
    text: str = ""
    top_level: bool = False
    limit: int = 50
    cursor: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # engine.list_runs filters (not limit/cursor)

    def link(self, **change: Any) -> str:
        """This query string with ``change`` applied (a status chip, the next page)."""
        params: list[tuple[str, str]] = []
        status = change.get("status", self.status)
        params += [("status", s) for s in status]
        for name, value in (("workflow", self.workflow), ("queue", self.queue), ("since", self.since),
                            ("from", self.created_from), ("to", self.created_to), ("q", self.text)):
            if value:
                params.append((name, value))
        params += [("attr", a) for a in self.attrs]
        if self.top_level:
            params.append(("top", "1"))
        if self.limit != 50:
            params.append(("limit", str(self.limit)))
        cursor = change.get("cursor")
        if cursor:
            params.append(("cursor", cursor))
        return "?" + str(QueryParams(params)) if params else "?"


def runs_query(params: QueryParams) -> RunsQuery:
    """Read and check every filter of the runs page (BadFilter on the first bad one)."""
    rq = RunsQuery()
    kw: dict[str, Any] = {}
    rq.status = [s.strip() for raw in params.getlist("status") for s in raw.split(",") if s.strip()]
    for s in rq.status:
        if s not in STATUSES:
            raise BadFilter("status", s, f"one of {', '.join(STATUSES)}")
    if rq.status:
        kw["status"] = rq.status
    rq.workflow = params.get("workflow", "").strip()
    if rq.workflow:
        kw["workflow"] = rq.workflow
    rq.queue = params.get("queue", "").strip()
    if rq.queue:
        kw["queue"] = rq.queue
    rq.since = params.get("since", "").strip()
    if rq.since:
        try:
            secs = parse_duration(rq.since, "since")
        except ConfigurationError:
            raise BadFilter("since", rq.since, f"a duration: {FORMS}") from None
        kw["created_after"] = datetime.now(timezone.utc) - timedelta(seconds=secs)
    rq.created_from = params.get("from", "").strip()
    rq.created_to = params.get("to", "").strip()
    for name, text, key in (("from", rq.created_from, "created_after"), ("to", rq.created_to, "created_before")):
        if text:
            at = _datetime(name, text)
            kw[key] = at if key not in kw else max(kw[key], at)
    rq.attrs = [a for a in params.getlist("attr") if a.strip()]
    if rq.attrs:
        kw["attributes"] = attribute_filter(rq.attrs)
    rq.text = params.get("q", "").strip()
    rq.top_level = params.get("top", "") in ("1", "on", "true")
    if rq.top_level:
        kw["top_level"] = True
    limit = params.get("limit", "50").strip()
    if not limit.isdigit() or int(limit) not in PAGE_SIZES:
        raise BadFilter("limit", limit, f"one of {', '.join(map(str, PAGE_SIZES))}")
    rq.limit = int(limit)
    cursor = params.get("cursor", "").strip()
    if cursor:
        try:
            decode_cursor(cursor)
        except ConfigurationError:
            raise BadFilter("cursor", cursor, "the value of a 'next page' link, unchanged") from None
        rq.cursor = cursor
    rq.kwargs = kw
    return rq


def _datetime(name: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(name, text, "an ISO date-time such as 2026-12-05T13:00 (UTC unless an offset is "
                                    "given, e.g. 2026-12-05T13:00+01:00)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def attribute_filter(items: list[str]) -> dict[str, Any]:
    """``attr=key=value`` (repeatable): the value as JSON when it parses to a scalar or a
    list (42, true, ["a","b"]), else as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise BadFilter("attr", item, "KEY=VALUE, e.g. attr=customer=c1 (the value as JSON when it parses: "
                                          "attr=amount=12.5)")
        out[key.strip()] = filter_value(text)
    return out


def id_prefix(text: str) -> str | None:
    """The hex digits of ``text`` when it looks like a run id or a prefix of one (at least
    MIN_PREFIX hex digits, hyphens optional), else None."""
    digits = text.strip().lower().replace("-", "")
    return digits if _HEX.match(digits) and MIN_PREFIX <= len(digits) <= 32 else None


def idempotency_run_id(workflow: str, key: str) -> uuid.UUID:
    """The id ``engine.start(workflow, key=key)`` gives its run (durable/engine.py)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"durable:{workflow}:{key}")
