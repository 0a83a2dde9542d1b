"""Serving the console from a process that already has an opened engine: ``durable ui`` and
``durable-dispatcher --ui``. One uvicorn server in the running event loop (no signal handlers
of its own: the host process owns SIGINT/SIGTERM) and one :class:`~durable.ui.live.LiveHub`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from ..errors import ConsoleBindError
from .app import create_app
from .auth import Guard
from .bind import check_token, url_of
from .live import LiveHub

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the host process handles signals
        yield


class ConsoleServer:
    """``await ConsoleServer(engine, host=..., port=...).start()`` serves the console until
    ``await stop()``; ``url`` is where (the real port when 0 was asked)."""

    def __init__(self, engine: Engine, *, host: str, port: int, token: str | None = None,
                 read_only: bool = False, token_flag: str = "--token", **hub_options: Any) -> None:
        check_token(host, token, flag=token_flag)
        self.engine = engine
        self.host = host
        self.port = port
        self.token = token
        self.read_only = read_only
        self.hub_options = hub_options
        self.hub: LiveHub | None = None
        self.app: Any = None
        self.server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    async def start(self) -> str:
        sock = self._bind()  # first: a taken port is an error before anything starts
        self.port = int(sock.getsockname()[1])
        self.hub = LiveHub.for_engine(self.engine, **self.hub_options)
        await self.hub.start()
        self.app = create_app(self.engine, token=self.token, read_only=self.read_only, hub=self.hub)
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="auto", timeout_graceful_shutdown=3, ws="none")
        self.server = _Server(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="durable-ui-server")
        while not self.server.started and not self._task.done():
            await asyncio.sleep(0.02)
        if self._task.done():
            await self.hub.stop()
            raise ConsoleBindError(f"the console's server did not start on {self.url}: {self._task.exception()!r}",
                                   host=self.host)
        log.info("console serving at %s", self.url, extra={"url": self.url, "read_only": self.read_only})
        return self.url

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConsoleBindError(f"the console cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): "
                                   "choose a free port, or an address of this machine", host=self.host) from None
        sock.set_inheritable(True)
        return sock

    async def stop(self) -> None:
        """End the browsers' streams, then stop the server (it waits for no stream)."""
        if self.hub is not None:
            await self.hub.stop()
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5.0)
            self._task = None
