"""The CLI's views of the registry: ``durable workers`` (the processes executing runs, from
their heartbeat rows) and ``durable workflows`` (what they registered, startable by name)."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from ..durations import ago, duration
from ..store import registry as store_registry
from .common import OK, connection
from .output import Out


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


async def cmd_workers(args: argparse.Namespace, out: Out) -> int:
    async with connection(args) as conn:
        workers = await store_registry.workers(conn)
    if args.alive:
        workers = [w for w in workers if w.alive]
    if out.json_mode:
        out.json([{"owner": w.owner, "host": w.host, "pid": w.pid, "queues": w.queues, "workflows": w.workflows,
                   "concurrency": w.concurrency, "started_at": w.started_at, "last_seen": w.last_seen,
                   "expires_at": w.expires_at, "alive": w.alive} for w in workers])
        return OK
    if not workers:
        out.print("no worker has run on this schema (start one: durable-dispatcher --module MODULE)")
        return OK
    now = datetime.now(timezone.utc)
    out.table(["HOST", "PID", "QUEUES", "WORKFLOWS", "CONCURRENCY", "LAST SEEN", "UP", "STATE"],
              [[w.host, str(w.pid), ",".join(w.queues), _short(",".join(w.workflows), 48), str(w.concurrency),
                ago(w.last_seen, now), duration((w.last_seen - w.started_at).total_seconds()),
                "alive" if w.alive else "expired"] for w in workers],
              styles={7: lambda cell: "green" if cell == "alive" else "dim"})
    return OK


async def cmd_workflows(args: argparse.Namespace, out: Out) -> int:
    async with connection(args) as conn:
        rows = await store_registry.all_registered(conn)
    if out.json_mode:
        out.json([{"name": w.name, "version": w.version, "queue": w.queue, "takes_input": w.takes_input,
                   "input_schema": w.input_schema, "result_schema": w.result_schema,
                   "execution_timeout_s": w.execution_timeout_s, "registered_by": w.registered_by,
                   "updated_at": w.updated_at} for w in rows])
        return OK
    if not rows:
        out.print("no workflow is registered (workers register theirs when they start)")
        return OK
    now = datetime.now(timezone.utc)
    out.table(["NAME", "VERSION", "QUEUE", "INPUT", "REGISTERED BY", "UPDATED"],
              [[w.name, str(w.version), w.queue,
                _short(str(w.input_schema.get("title", "schema")) if w.input_schema
                       else ("-" if not w.takes_input else "any"), 30), w.registered_by, ago(w.updated_at, now)] for w in rows])
    return OK
