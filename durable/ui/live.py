"""Live updates for the web console: one hub per server, one LISTEN connection however many
browsers watch, server-sent events to each browser (``static/live.js`` refetches the page's
``main`` when an event concerns it).

Where the changes come from, at no cost to the engine: the engine's statements are left as
they are (no trigger, no extra NOTIFY: a NOTIFY serialises commits). The hub

- LISTENs on the engine's wake channel and turns what it hears into events: ``<run>|<owner>``
  (a waiting run woken: a child ended, a signal arrived), ``done|<run>``, ``cancel|<run>``
  concern that run; ``new|<queue>`` says work became due on a queue;
- and, once a second while browsers are connected, looks at runs created since its last look
  (the ``created_at`` index) and at the runs it follows: runs seen created or woken that have
  not finished (at most ``track_limit``, newest kept) and every run a browser's page shows
  (``/events?run=ID``). A change of status or a new history event is an event.

So a top-level run that ends without anyone waiting on it (no NOTIFY) is still seen within a
second when it is on a page or was started while the console watched. With no browser
connected the hub holds no connection and runs no statement (after ``idle_close_s``).

Each browser has a bounded queue: a slow one loses events (and is told to refetch once,
``resync``), never blocks the hub. Events are small JSON objects:
``{"kind": "run", "run_id", "root_id", "parent_id", "status"}``, ``{"kind": "queue", "queue"}``,
``{"kind": "many"}`` (more changed at once than is worth listing), ``{"kind": "resync"}`` (the
hub lost events: refetch), and to each new browser ``{"kind": "hello", "run_id", "root_id"}``
(the root of the run it watches, for telling which events concern its tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg import sql
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..store import connections as db
from ..store import live as store
from ..store.rows import LiveRun

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)

Event = dict[str, Any]
TERMINAL = frozenset({"completed", "failed", "cancelled", "continued"})
_MARGIN = timedelta(seconds=2)  # created_at is a transaction's start: a slow insert commits late
_CATCH_UP = timedelta(seconds=5)


class _Client:
    """One browser: its bounded queue and the run its page shows (if any)."""

    def __init__(self, size: int, pin: uuid.UUID | None) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(size)
        self.pin = pin
        self.dropped = 0

    def offer(self, event: Event | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # a slow browser: forget what it has not read, tell it to refetch
            self.dropped += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait({"kind": "resync"} if event is not None else None)


class LiveHub:
    """The live-update hub of one console server. ``await hub.start()`` before serving,
    ``await hub.stop()`` after (ends every browser's stream); ``hub.routes()`` is the
    ``/events`` endpoint the app mounts. ``LiveHub.for_engine(engine)`` takes an opened
    engine's database, schema and channel."""

    def __init__(self, dsn: str, *, schema: str = "durable", channel: str | None = None,
                 poll_interval_s: float = 1.0, keepalive_s: float = 15.0, queue_size: int = 64,
                 track_limit: int = 500, max_events_per_tick: int = 50, idle_close_s: float = 10.0,
                 connect_timeout_s: float = 10.0) -> None:
        if poll_interval_s <= 0 or keepalive_s <= 0 or queue_size < 2 or track_limit < 1:
            raise ValueError("poll_interval_s and keepalive_s must be > 0, queue_size >= 2, track_limit >= 1")
        self.dsn = dsn
        self.schema = schema
        self.channel = channel or f"durable_wake_{schema}"
        self.poll_interval_s = poll_interval_s
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self.track_limit = track_limit
        self.max_events_per_tick = max_events_per_tick
        self.idle_close_s = idle_close_s
        self.connect_timeout_s = connect_timeout_s
        self.clients: set[_Client] = set()
        # who may listen: the app's check of a request (its token), set by whoever creates the app
        self.authorize: Callable[[Request], bool] | None = None
        self.listening = False  # a LISTEN connection is open (only while browsers watch)
        self.ticks = 0  # looks at the database so far (tests and the benchmark read it)
        self.connects = 0  # LISTEN connections opened so far
        self.backend_pid: int | None = None  # the LISTEN connection's server process
        self._joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._tracked: OrderedDict[uuid.UUID, None] = OrderedDict()  # unfinished runs seen, newest last
        self._known: dict[uuid.UUID, tuple[str, int]] = {}  # run -> (status, last_seq) at the last look
        self._roots: dict[uuid.UUID, uuid.UUID] = {}  # pinned run -> its root
        self._since: datetime | None = None
        self._seen_new: dict[uuid.UUID, datetime] = {}
        self._last_look = 0.0

    @classmethod
    def for_engine(cls, engine: Engine, **options: Any) -> LiveHub:
        if not engine.dsn:
            raise RuntimeError("open the engine first (await engine.open() or async with engine)")
        return cls(engine.dsn, schema=engine.settings.schema_name, channel=engine.channel,
                   connect_timeout_s=engine.settings.connect_timeout_s, **options)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the hub's task (it connects only while a browser is connected)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="durable-ui-live")

    async def stop(self) -> None:
        """End every browser's stream, close the LISTEN connection, stop the task."""
        self._closing = True
        for c in list(self.clients):
            c.offer(None)
        self._joined.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # --- the endpoint --------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [Route("/events", self.events, methods=["GET"], name="events")]

    async def events(self, request: Request) -> Response:
        """``GET /events[?run=ID]``: server-sent events; ``run`` pins the run a page shows."""
        pin: uuid.UUID | None = None
        raw = request.query_params.get("run")
        if raw:
            try:
                pin = uuid.UUID(raw)
            except ValueError:
                return PlainTextResponse(f"run={raw!r} is not a run id: give the full id of the run the page "
                                         "shows (a UUID)", status_code=400)
        if self.authorize is not None and not self.authorize(request):
            return PlainTextResponse("sign in first: live updates need the console's access token", status_code=401)
        if self._closing:
            return PlainTextResponse("the console is shutting down", status_code=503)
        client = self._join(pin)
        return EventSourceResponse(self._stream(client), ping=self.keepalive_s,
                                   headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _join(self, pin: uuid.UUID | None) -> _Client:
        client = _Client(self.queue_size, pin)
        self.clients.add(client)
        self._joined.set()
        if self._task is None and not self._closing:  # an app served without start(): start on demand
            self._task = asyncio.create_task(self._run(), name="durable-ui-live")
        return client

    async def _stream(self, client: _Client) -> AsyncIterator[dict[str, str]]:
        try:
            if client.pin is not None and client.pin in self._roots:
                yield _sse({"kind": "hello", "run_id": str(client.pin), "root_id": str(self._roots[client.pin])})
            while True:
                event = await client.queue.get()
                if event is None:
                    return
                yield _sse(event)
        finally:
            self.clients.discard(client)

    def broadcast(self, event: Event) -> None:
        for c in list(self.clients):
            c.offer(event)

    # --- the watcher -----------------------------------------------------------------------------

    async def _run(self) -> None:
        conn: Any = None
        backoff = 0.2
        lost = False
        try:
            while not self._closing:
                if not self.clients:
                    conn = await self._idle(conn)
                    continue
                if conn is None:
                    try:
                        conn = await self._connect()
                    except Exception as exc:
                        log.warning("console live updates: cannot connect (%s); retrying", exc)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    backoff = 0.2
                    if lost:
                        self.broadcast({"kind": "resync"})  # anything may have changed meanwhile
                    lost = False
                try:
                    await self._tick(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._closing:
                        break
                    log.warning("console live updates: lost the database connection (%s); reconnecting", exc)
                    await _close(conn)
                    conn, lost = None, True
                    self.listening = False
        finally:
            if conn is not None:
                await _close(conn)
            self.listening = False

    async def _idle(self, conn: Any) -> Any:
        """No browser: keep the connection ``idle_close_s`` for a page reload, then close it."""
        self._joined.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._joined.wait(), self.idle_close_s if conn is not None else None)
            return conn
        if conn is not None:
            await _close(conn)
            self.listening = False
            self._tracked.clear()
            self._known.clear()
            self._since = None
        return None

    async def _connect(self) -> Any:
        conn = await db.connect(self.dsn, schema=self.schema, timeout=self.connect_timeout_s)
        try:
            await conn.execute("SET statement_timeout = '5s'")
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            if self._since is None:  # a little before: runs started while the first page loaded
                self._since = await store.clock(conn) - _CATCH_UP
        except BaseException:
            await _close(conn)
            raise
        self.listening = True
        self.connects += 1
        self.backend_pid = conn.info.backend_pid
        return conn

    async def _tick(self, conn: Any) -> None:
        """Wait for notifications up to the poll interval (a first one is followed by a short
        window to batch what comes with it), then one look at the database."""
        woken: set[uuid.UUID] = set()
        queues: set[str] = set()
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_look + self.poll_interval_s - loop.time())
        async for note in conn.notifies(timeout=wait, stop_after=1):
            _route(note.payload, woken, queues)
        if woken or queues:  # batch what comes with it: a busy engine notifies all the time, and
            # the hub looks at most once per poll interval (at once after a quiet spell)
            batch = max(0.05, self._last_look + self.poll_interval_s - loop.time())
            async for note in conn.notifies(timeout=batch, stop_after=10_000):
                _route(note.payload, woken, queues)
        self._last_look = loop.time()
        if self._closing or not self.clients:
            return
        events = [{"kind": "queue", "queue": q} for q in sorted(queues)]
        events += await self._look(conn, woken)
        self.ticks += 1
        if len(events) > self.max_events_per_tick:
            events = [{"kind": "many"}]
        for e in events:
            self.broadcast(e)

    async def _look(self, conn: Any, woken: set[uuid.UUID]) -> list[Event]:
        events: list[Event] = []
        assert self._since is not None
        fresh = await store.created_since(conn, self._since - _MARGIN, limit=500)
        if len(fresh) == 500:  # more runs started than a page can show: one event, jump to now
            self._since = await store.clock(conn)
            self._seen_new.clear()
            events.append({"kind": "many"})
            fresh = []
        for r in fresh:
            if r.id in self._seen_new:
                continue
            self._seen_new[r.id] = r.created_at
            if r.created_at > self._since:
                self._since = r.created_at
            if r.status not in TERMINAL:
                self._track(r.id)
            self._known[r.id] = (r.status, r.last_seq)
            events.append(_event(r))
        horizon = self._since - _MARGIN
        for rid in [i for i, at in self._seen_new.items() if at < horizon]:
            del self._seen_new[rid]
        pinned = {c.pin for c in self.clients if c.pin is not None}
        for rid in woken:
            self._track(rid)
        ask = pinned | set(self._tracked)
        for r in await store.runs_now(conn, ask):
            before = self._known.get(r.id)
            now = (r.status, r.last_seq)
            self._known[r.id] = now
            if r.id in pinned and r.id not in self._roots:
                self._roots[r.id] = r.root_id
                self._hello(r)
            if r.status in TERMINAL and r.id in self._tracked:
                del self._tracked[r.id]
            if (before is not None and before != now) or r.id in woken:
                events.append(_event(r))
        for rid in list(self._known):
            if rid not in ask and rid not in self._seen_new:
                del self._known[rid]
        for rid in list(self._roots):
            if rid not in pinned:
                del self._roots[rid]
        return events

    def _track(self, run_id: uuid.UUID) -> None:
        self._tracked[run_id] = None
        self._tracked.move_to_end(run_id)
        while len(self._tracked) > self.track_limit:
            self._tracked.popitem(last=False)

    def _hello(self, r: LiveRun) -> None:
        for c in self.clients:
            if c.pin == r.id:
                c.offer({"kind": "hello", "run_id": str(r.id), "root_id": str(r.root_id)})


def _event(r: LiveRun) -> Event:
    return {"kind": "run", "run_id": str(r.id), "root_id": str(r.root_id),
            "parent_id": None if r.parent_id is None else str(r.parent_id), "status": r.status}


def _route(payload: str, woken: set[uuid.UUID], queues: set[str]) -> None:
    """A notification on the engine's channel: which run (or queue) it concerns."""
    head, _, tail = payload.partition("|")
    if head == "new":
        queues.add(tail)
        return
    text = tail if head in ("done", "cancel") else head
    try:
        woken.add(uuid.UUID(text))
    except ValueError:
        pass  # cancel|<owner>: the runs it concerns are looked at anyway


def _sse(event: Event) -> dict[str, str]:
    return {"data": json.dumps(event, separators=(",", ":"))}


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 1.0)
