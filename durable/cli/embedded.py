"""``durable embedded status|stop``: the embedded PostgreSQL that durable starts when no DSN
is set (the demo, scripts, the CLI itself) keeps running after them; these say where it is
and stop it. Both succeed when none is running."""

from __future__ import annotations

import argparse
import asyncio
import os

from ..store.embedded import EmbeddedStatus, embedded_status, stop_embedded
from .common import OK
from .output import Out


def _data_dir(args: argparse.Namespace) -> str | None:
    return args.data_dir or os.environ.get("DURABLE_DATA_DIR") or None


def _print_status(out: Out, st: EmbeddedStatus) -> None:
    out.print(f"{out.c('data dir', 'bold')}  {st.data_dir}" + ("" if st.initialised else "  (no database yet)"))
    if not st.running:
        out.print(f"{out.c('status', 'bold')}    {out.c('not running', 'yellow')}")
        return
    out.print(f"{out.c('status', 'bold')}    {out.c('running', 'green')}"
              + (f" ({st.state})" if st.state and st.state != "ready" else ""))
    out.print(f"{out.c('pid', 'bold')}       {st.pid}")
    where = f" (unix socket in {st.socket_dir})" if st.socket_dir else ""
    out.print(f"{out.c('port', 'bold')}      {st.port}{where}")
    if st.started_at:
        out.print(f"{out.c('started', 'bold')}   {st.started_at:%Y-%m-%d %H:%M:%S} UTC")
    if st.dsn:
        out.print(f"{out.c('dsn', 'bold')}       {st.dsn}")


async def cmd_embedded(args: argparse.Namespace, out: Out) -> int:
    data_dir = _data_dir(args)
    if args.action == "status":
        st = embedded_status(data_dir)
        if out.json_mode:
            out.json(st.as_dict())
        else:
            _print_status(out, st)
        return OK
    before = embedded_status(data_dir)
    stopped = await asyncio.to_thread(stop_embedded, data_dir) if before.running else False
    if out.json_mode:
        out.json({"data_dir": str(before.data_dir), "stopped": stopped, "pid": before.pid if stopped else None})
    elif stopped:
        out.print(f"stopped embedded PostgreSQL (pid {before.pid}) in {before.data_dir}")
    else:
        out.print(f"embedded PostgreSQL in {before.data_dir} is not running; nothing to stop")
    return OK
