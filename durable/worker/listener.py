"""The dedicated LISTEN connection: one per process, re-established with a catch-up
after any drop. Payloads: '<run>|<owner>' (wake a run), 'new|<queue>' (runs to claim),
'done|<run>' (a run finished and someone here waits for it), 'cancel|<owner>'."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from psycopg import sql

from ..store import connections as db
from ..observe import hooks
from .loop import BackgroundLoop

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("durable.worker.listener")


class Listener(BackgroundLoop):
    name = "listener"

    def __init__(self, engine: "Engine") -> None:
        super().__init__()
        self.engine = engine
        self.connected = asyncio.Event()
        self.conn = None
        self.backend_pid: int | None = None
        self._dead = False

    @property
    def up(self) -> bool:
        return self.connected.is_set()

    async def run(self) -> None:
        e = self.engine
        backoff = 0.1
        announced_down = False
        while not self._stopping:
            try:
                conn = await db.connect(e.dsn, schema=e.settings.schema_name,
                                        timeout=e.settings.connect_timeout_s)
            except Exception as exc:
                if not announced_down:
                    log.warning("listener cannot connect (%s); retrying with backoff, polling meanwhile", exc)
                    announced_down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.conn = conn
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(e.channel)))
                self.backend_pid = conn.info.backend_pid
                if announced_down:
                    log.warning("listener reconnected")
                announced_down = False
                backoff = 0.1
                self.connected.set()
                e.catch_up()  # anything that happened while we were not listening
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
                e.catch_up()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self, conn: Any) -> None:
        """Dispatch notifications; when none came for ``listener_keepalive_s``, ping the
        connection, and give it up when the ping does not answer in that time either (a
        half-open TCP connection would otherwise look connected forever)."""
        keepalive = self.engine.settings.listener_keepalive_s
        while not self._stopping:
            async for note in conn.notifies(timeout=keepalive):
                hooks.emit("wake.notification", channel=note.channel)
                self.dispatch(note.payload)
            # not wait_for: cancelling a query waits for the server, which a dead link never answers
            ping = asyncio.ensure_future(conn.execute("SELECT 1"))
            done, _ = await asyncio.wait({ping}, timeout=keepalive)
            if not done:
                ping.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._dead = True
                raise ConnectionError(f"the LISTEN connection did not answer a ping within {keepalive} s")
            ping.result()

    def dispatch(self, payload: str) -> None:
        e = self.engine
        head, _, tail = payload.partition("|")
        if head == "new":
            if tail in e.settings.queues:
                e.kick_claimer()
        elif head == "done":
            e.on_done_notification(tail)
        elif head == "cancel":
            e.on_cancel_notification(tail)
        else:
            try:
                run_id = uuid.UUID(head)
            except ValueError:
                log.debug("ignoring notification %r", payload)
                return
            e.on_wake_notification(run_id, tail)
