"""The dedicated LISTEN connection: one per process, re-established with a catch-up
after any drop. Payloads: '<run>|<owner>' (wake a run), 'new|<queue>' (runs to claim),
'done|<run>' (a run finished and someone here waits for it), 'cancel|<owner>'."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg import sql

from ..config import EngineSettings
from ..observe import hooks
from ..runtime.notifications import Notifications
from ..store import connections as db
from .loop import BackgroundLoop

log = logging.getLogger(__name__)


class Listener(BackgroundLoop):
    name = "listener"

    def __init__(self, settings: EngineSettings, channel: str, notifications: Notifications) -> None:
        super().__init__()
        self.settings = settings
        self.channel = channel
        self.notifications = notifications
        self.dsn = ""  # set by the engine once it knows where the database is
        self.connected = asyncio.Event()
        self.conn: Any = None
        self.backend_pid: int | None = None
        self._dead = False

    @property
    def up(self) -> bool:
        return self.connected.is_set()

    async def run(self) -> None:
        backoff = 0.1
        announced_down = False
        while not self._stopping:
            try:
                conn = await db.connect(self.dsn, schema=self.settings.schema_name,
                                        timeout=self.settings.connect_timeout_s)
            except Exception as exc:
                if not announced_down:
                    log.warning("listener cannot connect (%s); retrying with backoff, polling meanwhile", exc)
                    announced_down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.conn = conn
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self.backend_pid = conn.info.backend_pid
                if announced_down:
                    log.warning("listener reconnected")
                announced_down = False
                backoff = 0.1
                self.connected.set()
                self.notifications.connected()  # anything that happened while we were not listening
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:
                    log.warning("listener connection lost (%s); reconnecting", exc)
                    announced_down = True
            finally:
                self.connected.clear()
                self.conn = None
                try:
                    if self._dead:  # half-open: drop the socket, a polite close would hang
                        self._dead = False
                        conn.pgconn.finish()
                    else:
                        await asyncio.wait_for(conn.close(), 1.0)
                except Exception:
                    pass
            if not self._stopping:
                self.notifications.connected()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self, conn: Any) -> None:
        """Dispatch notifications; when none came for ``listener_keepalive_s``, ping the
        connection, and give it up when the ping does not answer in that time either (a
        half-open TCP connection would otherwise look connected forever)."""
        keepalive = self.settings.listener_keepalive_s
        while not self._stopping:
            async for note in conn.notifies(timeout=keepalive):
                hooks.emit("wake.notification", channel=note.channel)
                self.notifications.dispatch(note.payload)
            # not wait_for: cancelling a query waits for the server, which a dead link never answers
            ping = asyncio.ensure_future(conn.execute("SELECT 1"))
            done, _ = await asyncio.wait({ping}, timeout=keepalive)
            if not done:
                ping.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._dead = True
                raise ConnectionError(f"the LISTEN connection did not answer a ping within {keepalive} s")
            ping.result()
