"""The read-only views of the CLI: ``durable runs``, ``durable show``, ``durable tree``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from ..attributes import filter_value
from ..durations import ago, duration, took
from ..errors import ConfigurationError, FailureInfo, RunNotFoundError
from ..store import inspect as store_inspect
from ..store import search as store_search
from ..store.rows import RunFilter
from ..trees import group_children, tree_doc
from .common import OK, STATUSES, USAGE, CliError, connection, run_id, seconds
from .output import STATUS_STYLE, Out, clip, error_line, event_detail, render_tree


def _attr_filter(items: list[str]) -> dict[str, Any] | None:
    """``--attr key=value`` (repeatable) as an attribute filter: the value as JSON when it
    parses (42, true, ["a","b"]), else as a string."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CliError(USAGE, f"--attr {item!r} is not KEY=VALUE; e.g. --attr customer=c1")
        out[key.strip()] = filter_value(text)
    return out


def _run_filter(args: argparse.Namespace, *, paged: bool) -> RunFilter:
    statuses = [s.strip() for part in args.status for s in part.split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise CliError(USAGE, f"unknown status {bad[0]!r}: use one of {', '.join(STATUSES)}")
    before = None
    if paged and args.cursor:
        try:
            before = store_search.decode_cursor(args.cursor)
        except ConfigurationError:
            raise CliError(USAGE, f"--cursor {args.cursor!r} is not a cursor printed by `durable runs`") from None
    newer = seconds(args.newer_than, "--newer-than")
    since = seconds(args.since, "--since")
    if since is not None:
        newer = since if newer is None else min(newer, since)
    return RunFilter(statuses=tuple(statuses), workflow=args.workflow or None, queue=args.queue or None,
                     parent_id=run_id(args.parent) if args.parent else None,
                     root_id=run_id(args.root) if args.root else None, top_level=bool(args.top_level),
                     older_than_s=seconds(args.older_than, "--older-than"), newer_than_s=newer, before=before,
                     attributes=_attr_filter(args.attr))


async def cmd_runs(args: argparse.Namespace, out: Out) -> int:
    if not 1 <= args.limit <= store_search.MAX_LIMIT:
        raise CliError(USAGE, f"--limit must be between 1 and {store_search.MAX_LIMIT}, got {args.limit}")
    flt = _run_filter(args, paged=True)
    async with connection(args) as conn:
        page = await store_search.list_runs(conn, flt, args.limit)
    rows = page.runs
    if out.json_mode:
        out.json({"runs": [asdict(r) for r in rows], "next_cursor": page.next_cursor})
        return OK
    if not rows:
        out.print("no runs match")
        return OK
    now = page.db_now
    show_attrs = any(r.attributes for r in rows)
    out.table(["RUN", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "TOOK", "ERROR"] + (["ATTRIBUTES"] if show_attrs else []),
              [[str(r.id), f"{r.workflow} v{r.version}", r.status, r.queue, ago(r.created_at, now), took(asdict(r), now),
                clip_error(r.error_type, r.error_message)] + ([_attrs_line(r.attributes)] if show_attrs else []) for r in rows],
              styles={2: lambda cell: STATUS_STYLE.get(cell.strip())}, ids=0,
              shrink=(1, 3, 6) + ((7,) if show_attrs else ()))
    if page.next_cursor:
        out.print(out.c(f"more: durable runs … --cursor {page.next_cursor}", "dim"))
    return OK


async def cmd_count(args: argparse.Namespace, out: Out) -> int:
    flt = _run_filter(args, paged=False)
    async with connection(args) as conn:
        n = await store_search.count_runs(conn, flt)
    if out.json_mode:
        out.json({"count": n})
    else:
        out.print(str(n))
    return OK


def _attrs_line(attrs: dict[str, Any], width: int = 60) -> str:
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                    for k, v in sorted(attrs.items()))
    return text if len(text) <= width else text[: width - 1] + "…"


def clip_error(kind: str | None, message: str | None) -> str:
    """The runs table's ERROR cell: the root cause, ``Declined: card refused`` (the message
    is cut to 200 characters by the query; the table fits it to a terminal)."""
    if not kind:
        return ""
    return f"{kind}: {message}" if message else kind


def cause_chain(error: Any, width: int | None) -> list[str]:
    """``show``'s cause chain, outermost link first (nothing for an error without a cause)."""
    info = FailureInfo.from_doc(error)
    if info is None or info.cause is None:
        return []
    lines = []
    for depth, link in enumerate(info.chain()):
        where = [f"run {link.run_id}" if link.run_id else "", link.workflow or "",
                 f"step {link.step!r}" if link.step else "", "non-retryable" if link.non_retryable else ""]
        label = ", ".join(w for w in where if w)
        text = f"{'  ' * depth}{'└ ' if depth else 'chain: '}{link.type}" + (f" ({label})" if label else "")
        if link.cause is None:  # the root: its message and details
            text += f": {link.message}" if link.message else ""
            if link.details is not None:
                text += f"  details={clip(link.details, width)}"
        lines.append(text if width is None else text[:width])
    return lines


async def cmd_show(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    async with connection(args) as conn:
        detail = await store_inspect.show_run(conn, rid)
        if detail is None:
            raise RunNotFoundError(rid)
        events = await store_inspect.show_events(conn, rid, args.events)
    run: dict[str, Any] = dict(detail)
    now = run.pop("db_now")
    if out.json_mode:
        out.json({**run, "events": events})
        return OK
    c = out.c

    def field(name: str, value: str) -> None:
        out.print(f"{c(name.ljust(10), 'bold')}{value}")

    field("run", c(str(run["id"]), "bold"))
    field("workflow", f"{run['workflow']} (version {run['version']}) on queue {run['queue']}")
    field("status", out.status(run["status"]) + (c("  cancel requested", "yellow")
                                                   if run["cancel_requested"] and run["status"] not in
                                                   ("cancelled", "completed", "failed") else ""))
    if run["parent_id"]:
        field("parent", f"{run['parent_id']} (depth {run['depth']}, on parent close: {run['parent_close_policy']})")
    if run["root_id"] != run["id"]:
        field("root", str(run["root_id"]))
    if run["chain_root_id"] != run["id"]:
        field("chain", f"continues {run['chain_root_id']}")
    if run["continued_to"]:
        field("continued", f"as {run['continued_to']}")
    if run["idempotency_key"]:
        field("key", run["idempotency_key"])
    if run.get("child_key"):
        field("child key", run["child_key"])
    if run.get("attributes"):
        field("attrs", _attrs_line(run["attributes"], 200))
    if run.get("origin_id"):  # re-driven: restart or fork of another run
        field("origin", f"{run['origin_kind']} of {run['origin_id']}"
                        + (f" at {run['origin_at']}" if run["origin_kind"] == "fork" else ""))
    width = None if args.full else 200
    field("input", clip(run["input"], width))
    if run["status"] == "completed":
        field("result", clip(run["result"], width))
    if run["error"] is not None:
        field("error", c(error_line(run["error"]), "red"))
        for line in cause_chain(run["error"], width):
            field("", c(line, "dim"))
        tb = run["error"].get("traceback") if isinstance(run["error"], dict) else None
        if tb and args.full:
            out.print(c(tb.rstrip(), "dim"))
    if run["status"] == "running" and run["lease_owner"]:
        expiry = ago(run["lease_expires_at"], now) if run["lease_expires_at"] else "when its process stops"
        field("lease", f"{run['lease_owner']} (epoch {run['lease_epoch']}, expires {expiry})")
    elif run["lease_owner"] and run["status"] == "suspended":
        field("parked", f"in {run['lease_owner']} (sticky hint)")
    if run["next_wakeup_at"] is not None:
        field("wakes", ago(run["next_wakeup_at"], now))
    if run["deadline_at"] is not None and run["finished_at"] is None:
        field("deadline", ago(run["deadline_at"], now))
    timing = f"created {run['created_at']:%Y-%m-%d %H:%M:%S} ({ago(run['created_at'], now)})"
    if run["started_at"]:
        timing += f", ran {took(run, now)}"
    field("timing", timing + (f" (attempt {run['attempt']})" if run["attempt"] > 1 else ""))
    if run["children"]:
        field("children", ", ".join(f"{n} {out.status(s)}" for s, n in sorted(run["children"].items())))
    if run["pending_signals"]:
        field("signals", f"{run['pending_signals']} waiting to be received")
    field("history", f"{run['event_count']} event(s)" + (f", first {len(events)} shown (--events N)"
                                                         if run["event_count"] > len(events) else ""))
    if events:
        # events a resume superseded (kept, but replay skips them: durable/runtime/journal.py replayable)
        superseded = [(e["data"].get("superseded_from") or e["seq"], e["seq"]) for e in events
                      if e["kind"] == "resumed" and isinstance(e["data"], dict)]
        out.table(["SEQ", "POS", "KIND", "NAME", "AT", "DETAIL"],
                  [[str(e["seq"]), "" if e["pos"] is None else str(e["pos"]),
                    e["kind"] + (" (superseded)" if any(lo <= e["seq"] < hi for lo, hi in superseded) else ""),
                    e["name"] or "",
                    f"+{duration((e['created_at'] - run['created_at']).total_seconds())}",
                    event_detail(e["kind"], e["data"], 200 if args.full else 70)] for e in events],
                  styles={2: lambda k: "dim" if k.endswith("(superseded)") else
                          "red" if k.endswith(("failed", "cancelled")) else
                          "yellow" if k in ("step_retry", "cancel_observed") else None}, shrink=(3, 5))
    return OK


async def cmd_tree(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    if not 1 <= args.limit <= 100_000:
        raise CliError(USAGE, f"--limit must be between 1 and 100000, got {args.limit}")
    async with connection(args) as conn:
        rows = await store_inspect.run_tree(conn, rid, args.limit + 1)
    if not rows:
        raise RunNotFoundError(rid)
    now = rows[0]["db_now"]
    tree, size, truncated = tree_doc(rows, rid, args.limit)
    if out.json_mode:
        out.json({"tree": tree, "runs": size, "truncated": truncated})
        return OK

    render_tree(out, tree if args.all else group_children(tree), now)
    if truncated:
        out.print(out.c(f"… tree cut at {args.limit} runs (--limit N shows more)", "yellow"))
    return OK
