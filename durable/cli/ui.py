"""``durable ui``: serve the web console (runs, a run's timeline and tree, workers and queues,
live updates, actions) from this process until Ctrl-C. Needs ``pip install 'durable[ui]'``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from typing import Any, Callable

from ..ui.bind import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, check_token
from ..engine import Engine
from .common import OK, USAGE, CliError
from .output import Out

try:  # the [ui] extra (starlette, jinja2, uvicorn, sse-starlette)
    from ..ui.serve import ConsoleServer
except ImportError as exc:  # pragma: no cover - exercised without the extra
    ConsoleServer = None  # type: ignore[assignment, misc]
    _MISSING = str(exc)


def add_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("ui", "serve the web console (runs, timelines, trees, workers; live; actions)",
            f"Listens on {DEFAULT_HOST}:{DEFAULT_PORT} unless told; any address beyond loopback needs an access "
            f"token (--token or env {TOKEN_ENV}). Actions always need the token. Ctrl-C stops.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; "
                                                        "0.0.0.0 or a public address needs --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    p.add_argument("--token", default=None, help=f"access token for pages and actions (default: env {TOKEN_ENV}; "
                                                 "at least 8 characters)")
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action")


async def cmd_ui(args: argparse.Namespace, out: Out) -> int:
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if not 0 <= args.port <= 65535:
        raise CliError(USAGE, f"--port {args.port} is not a port: give 0-65535 (0: a free one)")
    check_token(args.host, token)  # before touching the database
    if ConsoleServer is None:
        raise CliError(USAGE, f"the web console needs its extra: pip install 'durable[ui]' ({_MISSING})")
    e = Engine(args.dsn, schema=args.schema, execute=False, migrate=False, pool_size=8, metrics=False,
               connect_timeout_s=args.connect_timeout)
    async with e:
        server = ConsoleServer(e, host=args.host, port=args.port, token=token, read_only=args.read_only)
        url = await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            _announce(out, server, url, token)
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await server.stop()
    return OK


def _announce(out: Out, server: Any, url: str, token: str | None) -> None:
    """The URL on stdout (``--json``: one document); how to act, on stderr."""
    app_token = getattr(getattr(server.app, "state", None), "token", None)
    if out.json_mode:
        # one line (the server keeps running: a script reads the first line)
        out.print(json.dumps({"url": url, "read_only": server.read_only, "token_required": token is not None}))
    else:
        mode = " (read-only)" if server.read_only else ""
        out.print(f"durable console{mode}: {url}")
    if token is None and app_token and not server.read_only:  # a token made for this run: the sign-in link
        out.err(f"actions need this session's token; sign in with {url}login?token={app_token} "
                f"(or start with --token / {TOKEN_ENV})")
    out.err("Ctrl-C stops")
