"""The read-only views of the CLI: ``durable runs``, ``durable show``, ``durable tree``."""

from __future__ import annotations

import argparse
import uuid
from datetime import datetime
from typing import Any

from .commands import OK, STATUSES, USAGE, CliError, connection, fetch, run_id, seconds
from .output import STATUS_STYLE, Out, ago, clip, duration, error_line, event_detail, render_tree, took
from ..errors import RunNotFoundError

_RUNS_COLUMNS = """id, workflow, version, queue, status, parent_id, root_id, created_at, started_at,
       finished_at, error->>'type' AS error_type, now() AS db_now"""


async def cmd_runs(args: argparse.Namespace, out: Out) -> int:
    where, params = [], []
    statuses = [s.strip() for part in args.status for s in part.split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise CliError(USAGE, f"unknown status {bad[0]!r}: use one of {', '.join(STATUSES)}")
    if statuses:
        where.append("status = ANY(%s)")
        params.append(statuses)
    if args.workflow:
        if "*" in args.workflow:
            where.append("workflow LIKE %s")
            params.append(args.workflow.replace("%", r"\%").replace("_", r"\_").replace("*", "%"))
        else:
            where.append("workflow = %s")
            params.append(args.workflow)
    if args.queue:
        where.append("queue = %s")
        params.append(args.queue)
    if args.parent:
        where.append("parent_id = %s")
        params.append(run_id(args.parent))
    if args.root:
        where.append("root_id = %s")
        params.append(run_id(args.root))
    if args.top_level:
        where.append("parent_id IS NULL")
    older, newer = seconds(args.older_than, "--older-than"), seconds(args.newer_than, "--newer-than")
    if older is not None:
        where.append("created_at < now() - make_interval(secs => %s)")
        params.append(older)
    if newer is not None:
        where.append("created_at >= now() - make_interval(secs => %s)")
        params.append(newer)
    if args.cursor:
        ts, _, cid = args.cursor.rpartition(",")
        try:
            cursor = (datetime.fromisoformat(ts), uuid.UUID(cid))
        except ValueError:
            raise CliError(USAGE, f"--cursor {args.cursor!r} is not a cursor printed by `durable runs`") from None
        where.append("(created_at, id) < (%s, %s)")
        params.extend(cursor)
    if not 1 <= args.limit <= 10_000:
        raise CliError(USAGE, f"--limit must be between 1 and 10000, got {args.limit}")
    query = (f"SELECT {_RUNS_COLUMNS} FROM durable_runs" + (" WHERE " + " AND ".join(where) if where else "")
             + " ORDER BY created_at DESC, id DESC LIMIT %s")
    async with connection(args) as conn:
        rows = await fetch(conn, query, [*params, args.limit + 1])
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    cursor_out = f"{rows[-1]['created_at'].isoformat()},{rows[-1]['id']}" if more else None
    if out.json_mode:
        out.json({"runs": [{k: v for k, v in r.items() if k != "db_now"} for r in rows], "next_cursor": cursor_out})
        return OK
    if not rows:
        out.print("no runs match")
        return OK
    now = rows[0]["db_now"]
    out.table(["RUN", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "TOOK", "ERROR"],
              [[str(r["id"]), f"{r['workflow']}", r["status"], r["queue"], ago(r["created_at"], now),
                took(r, now), r["error_type"] or ""] for r in rows],
              styles={2: lambda cell: STATUS_STYLE.get(cell.strip())})
    if cursor_out:
        out.print(out.c(f"more: durable runs … --cursor {cursor_out}", "dim"))
    return OK


_SHOW_RUN = """
SELECT id, root_id, parent_id, chain_root_id, continued_to, workflow, version, queue, status, input,
       result, error, attempt, depth, parent_close_policy, idempotency_key, lease_owner, lease_token,
       lease_expires_at, next_wakeup_at, deadline_at, cancel_requested, created_at, started_at, finished_at,
       now() AS db_now,
       (SELECT count(*) FROM durable_events e WHERE e.run_id = r.id) AS event_count,
       (SELECT count(*) FROM durable_signals s WHERE s.run_id = r.id AND s.consumed_seq IS NULL) AS pending_signals,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
          (SELECT status, count(*) AS n FROM durable_runs c WHERE c.parent_id = r.id GROUP BY status) g) AS children
  FROM durable_runs r WHERE id = %s
"""
_SHOW_EVENTS = "SELECT seq, pos, kind, name, data, created_at FROM durable_events WHERE run_id = %s ORDER BY seq LIMIT %s"


async def cmd_show(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    async with connection(args) as conn:
        rows = await fetch(conn, _SHOW_RUN, (rid,))
        if not rows:
            raise RunNotFoundError(rid)
        run = rows[0]
        events = await fetch(conn, _SHOW_EVENTS, (rid, args.events))
    now = run.pop("db_now")
    if out.json_mode:
        out.json({**run, "events": events})
        return OK
    c = out.c
    field = lambda name, value: out.print(f"{c(name.ljust(10), 'bold')}{value}")
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
    width = None if args.full else 200
    field("input", clip(run["input"], width))
    if run["status"] == "completed":
        field("result", clip(run["result"], width))
    if run["error"] is not None:
        field("error", c(error_line(run["error"]), "red"))
        tb = run["error"].get("traceback") if isinstance(run["error"], dict) else None
        if tb and args.full:
            out.print(c(tb.rstrip(), "dim"))
    if run["lease_token"] is not None:
        field("lease", f"{run['lease_owner']} (token {run['lease_token']}, expires {ago(run['lease_expires_at'], now)})")
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
        out.table(["SEQ", "POS", "KIND", "NAME", "AT", "DETAIL"],
                  [[str(e["seq"]), "" if e["pos"] is None else str(e["pos"]), e["kind"], e["name"] or "",
                    f"+{duration((e['created_at'] - run['created_at']).total_seconds())}",
                    event_detail(e["kind"], e["data"], 200 if args.full else 70)] for e in events],
                  styles={2: lambda k: "red" if k.endswith(("failed", "cancelled")) else
                          "yellow" if k in ("step_retry", "cancel_observed") else None})
    return OK


_TREE = """
WITH RECURSIVE t AS (
    SELECT r.id, r.parent_id, r.continued_to, 0 AS lvl FROM durable_runs r WHERE r.id = %(id)s
    UNION ALL
    SELECT n.id, n.parent_id, n.continued_to, n.lvl FROM t CROSS JOIN LATERAL (
        SELECT c.id, c.parent_id, c.continued_to, t.lvl + 1 AS lvl FROM durable_runs c WHERE c.parent_id = t.id
        UNION ALL
        SELECT s.id, s.parent_id, s.continued_to, t.lvl FROM durable_runs s
         WHERE s.id = t.continued_to AND t.lvl = 0) n
), picked AS (SELECT * FROM t LIMIT %(limit)s)
SELECT r.id, r.parent_id, r.continued_to, p.lvl, r.workflow, r.status, r.queue, r.created_at, r.started_at,
       r.finished_at, r.error, now() AS db_now
  FROM picked p JOIN durable_runs r ON r.id = p.id
 ORDER BY r.created_at, r.id
"""


async def cmd_tree(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    if not 1 <= args.limit <= 100_000:
        raise CliError(USAGE, f"--limit must be between 1 and 100000, got {args.limit}")
    async with connection(args) as conn:
        rows = await fetch(conn, _TREE, {"id": rid, "limit": args.limit + 1})
    if not rows:
        raise RunNotFoundError(rid)
    truncated = len(rows) > args.limit
    nodes = {r["id"]: r for r in rows[: args.limit]} if truncated else {r["id"]: r for r in rows}
    if rid not in nodes:
        nodes[rid] = next(r for r in rows if r["id"] == rid)
    now = rows[0]["db_now"]
    successors = {r["continued_to"] for r in nodes.values() if r["continued_to"] in nodes}
    kids: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for r in nodes.values():
        if r["id"] != rid and r["id"] not in successors and r["parent_id"] in nodes:
            kids.setdefault(r["parent_id"], []).append(r)

    def doc(r: dict[str, Any]) -> dict[str, Any]:
        nxt = nodes.get(r["continued_to"]) if r["continued_to"] else None
        return {"id": r["id"], "workflow": r["workflow"], "status": r["status"], "queue": r["queue"],
                "created_at": r["created_at"], "started_at": r["started_at"], "finished_at": r["finished_at"],
                "error": r["error"], "children": [doc(k) for k in kids.get(r["id"], [])],
                "continued_as": doc(nxt) if nxt else None}

    tree = doc(nodes[rid])
    if out.json_mode:
        out.json({"tree": tree, "runs": len(nodes), "truncated": truncated})
        return OK

    render_tree(out, tree, now)
    if truncated:
        out.print(out.c(f"… tree cut at {args.limit} runs (--limit N shows more)", "yellow"))
    return OK
