"""``durable export RUN > run.json``: a run's history as a versioned JSON document
(durable/runtime/history.py), for ``durable.testing.Replayer`` in a CI job."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runtime import history as run_history
from .common import OK, USAGE, CliError, connection, run_id
from .output import Out


async def cmd_export(args: argparse.Namespace, out: Out) -> int:
    rid = run_id(args.run)
    async with connection(args) as conn:
        history = await run_history.load(conn, rid)
    text = history.to_json(indent=2)
    if args.output:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(USAGE, f"cannot write {args.output!r}: {exc.strerror or exc}") from None
        out.err(f"wrote the history of run {rid} ({len(history.events)} events, workflow {history.workflow} "
                f"v{history.version}) to {args.output}")
    else:
        out.print(text)  # one JSON document (with or without --json)
    return OK
