"""The console's live hub (durable/ui/live.py): one LISTEN connection however many browsers,
events for the runs a page shows (a woken run, a status change, a run started), bounded
queues (a slow browser loses events, never blocks), nothing held without browsers, clean
shutdown; and the /events endpoint on the wire (server-sent events through a real server)."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg
import pytest

pytest.importorskip("sse_starlette")

from durable.ui.live import LiveHub  # noqa: E402

from helpers import eventually  # noqa: E402
from wf_lifecycle import TreeSpec, quick, tree, waiter  # noqa: E402


def _hub(engine, **kw) -> LiveHub:
    kw.setdefault("poll_interval_s", 0.2)
    return LiveHub.for_engine(engine, **kw)


async def _next(client, pred, timeout=10.0):
    """The first event on the client's queue that ``pred`` accepts."""
    async def take():
        while True:
            ev = await client.queue.get()
            if ev is not None and pred(ev):
                return ev
    return await asyncio.wait_for(take(), timeout)


async def test_one_listen_connection_for_many_browsers(engine):
    hub = _hub(engine)
    await hub.start()
    try:
        clients = [hub._join(None) for _ in range(25)]
        await eventually(lambda: hub.listening and hub.ticks >= 2, 10, what="the hub to look twice")
        assert hub.connects == 1
        h = await engine.start(quick, 2)
        ev = await _next(clients[-1], lambda e: e.get("run_id") == str(h.run_id))
        assert ev["kind"] == "run" and ev["root_id"] == str(h.run_id)
        for c in clients:  # every browser got it
            assert any(e.get("run_id") == str(h.run_id) for e in list(c.queue._queue) + [ev] if e)
        assert hub.connects == 1
    finally:
        await hub.stop()


async def test_a_page_hears_its_run_woken_and_finished(engine):
    """A run waiting for a signal: the page pinned on it learns its root (hello), hears the
    signal's wake and the run's end, though nothing waits on its result (no done| NOTIFY)."""
    h = await engine.start(waiter, "go")
    await eventually(lambda: _is(h, "suspended"), 10, what="the run to wait")
    hub = _hub(engine)
    await hub.start()
    try:
        page = hub._join(h.run_id)
        hello = await _next(page, lambda e: e["kind"] == "hello")
        assert hello == {"kind": "hello", "run_id": str(h.run_id), "root_id": str(h.run_id)}
        await engine.signal(h.run_id, "go", 1)
        ev = await _next(page, lambda e: e.get("run_id") == str(h.run_id) and e.get("status") == "completed")
        assert ev["kind"] == "run"
    finally:
        await hub.stop()


async def test_a_cancel_reaches_the_page(engine):
    h = await engine.start(waiter, "never")
    await eventually(lambda: _is(h, "suspended"), 10, what="the run to wait")
    hub = _hub(engine)
    await hub.start()
    try:
        page = hub._join(h.run_id)
        await _next(page, lambda e: e["kind"] == "hello")
        await engine.cancel(h.run_id)
        await _next(page, lambda e: e.get("run_id") == str(h.run_id) and e.get("status") == "cancelled")
    finally:
        await hub.stop()


async def test_a_tree_page_hears_its_descendants(engine):
    """A grandchild's end wakes its parent: the event names the tree's root, so the root's
    page (and a child's page, through hello's root) knows it concerns its tree."""
    hub = _hub(engine)
    await hub.start()
    try:
        runs_page = hub._join(None)
        h = await engine.start(tree, TreeSpec(max_depth=2, fan={0: 3, 1: 2}, leaf="signal"))
        # every run of the tree is seen created, each naming the root
        seen: set[str] = set()

        def in_tree(e):
            if e.get("kind") == "run" and e.get("root_id") == str(h.run_id):
                seen.add(e["run_id"])
            return len(seen) >= 10
        await _next(runs_page, in_tree, timeout=20)
        leaf = next(r for r in (await engine.list_runs(root=h.run_id, limit=20)).runs
                    if r.parent_id not in (None, h.run_id))
        await eventually(lambda: _is_id(engine, leaf.id, "suspended"), 10, what="the leaf to wait")
        await engine.signal(leaf.id, "never", 1)
        ev = await _next(runs_page, lambda e: e.get("run_id") == str(leaf.parent_id), timeout=10)
        assert ev["root_id"] == str(h.run_id)
    finally:
        await hub.stop()


async def test_a_slow_browser_loses_events_and_never_blocks_the_hub(engine):
    hub = _hub(engine, queue_size=8)
    await hub.start()
    try:
        slow = hub._join(None)  # never reads
        fast = hub._join(None)
        await eventually(lambda: hub.ticks >= 1, 10, what="the hub to look")
        drain = asyncio.ensure_future(_next(fast, lambda e: False, timeout=60))
        for _ in range(20):
            await engine.start(waiter, "x")
        await eventually(lambda: slow.dropped > 0, 10, what="the slow browser's queue to overflow")
        drain.cancel()
        late = await engine.start(quick, 1)  # the hub still serves the others
        await _next(fast, lambda e: e.get("run_id") == str(late.run_id))
        assert slow.queue.qsize() <= 8 and {"kind": "resync"} in list(slow.queue._queue)
    finally:
        await hub.stop()


async def test_no_browser_no_connection(engine):
    hub = _hub(engine, idle_close_s=0.3)
    await hub.start()
    try:
        await asyncio.sleep(0.5)
        assert not hub.listening and hub.connects == 0 and hub.ticks == 0
        c = hub._join(None)
        await eventually(lambda: hub.listening, 10, what="the hub to listen")
        hub.clients.discard(c)  # the browser went away
        await eventually(lambda: not hub.listening, 10, what="the hub to close its connection")
        ticks = hub.ticks
        await asyncio.sleep(0.6)
        assert hub.ticks == ticks  # no statement while nobody watches
    finally:
        await hub.stop()


async def test_a_lost_connection_is_replaced_and_pages_told_to_refetch(engine, db):
    hub = _hub(engine)
    await hub.start()
    try:
        page = hub._join(None)
        await eventually(lambda: hub.ticks >= 1, 10, what="the hub to look")
        conn = await psycopg.AsyncConnection.connect(db.dsn, autocommit=True)
        try:
            await conn.execute("SELECT pg_terminate_backend(%s::int)", (hub.backend_pid,))
        finally:
            await conn.close()
        await _next(page, lambda e: e["kind"] == "resync")
        assert hub.connects == 2 and hub.listening
        h = await engine.start(quick, 3)  # and it hears runs again
        await _next(page, lambda e: e.get("run_id") == str(h.run_id))
    finally:
        await hub.stop()


async def test_events_need_the_token_when_the_pages_do(engine):
    """Served with a token, /events answers only whom the pages answer (a bearer header, or
    the session cookie of the login form); without one it is open like the pages."""
    from durable.ui.serve import ConsoleServer

    token = "live-events-token-1"
    server = ConsoleServer(engine, host="127.0.0.1", port=0, token=token)
    url = await server.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            denied = await http.get(url + "events")
            assert denied.status_code == 401 and "access token" in denied.text
            async with http.stream("GET", url + "events", headers={"authorization": f"Bearer {token}"}) as ok:
                assert ok.status_code == 200
            signed = await http.get(url + f"login?token={token}")  # sets the session cookie
            assert signed.status_code in (200, 303)
            async with http.stream("GET", url + "events") as ok:
                assert ok.status_code == 200
    finally:
        await asyncio.wait_for(server.stop(), 10)


async def test_stop_ends_every_stream(engine):
    hub = _hub(engine)
    await hub.start()
    c = hub._join(None)
    stream = hub._stream(c)
    reader = asyncio.ensure_future(_drain(stream))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(hub.stop(), 5)
    await asyncio.wait_for(reader, 5)
    assert not hub.clients and not hub.listening


async def test_events_endpoint_on_the_wire(engine):
    """Through a real server: text/event-stream, the JSON events, a bad run id refused."""
    from durable.ui.serve import ConsoleServer

    h = await engine.start(waiter, "go")
    await eventually(lambda: _is(h, "suspended"), 10, what="the run to wait")
    server = ConsoleServer(engine, host="127.0.0.1", port=0, poll_interval_s=0.2, keepalive_s=1)
    url = await server.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            bad = await http.get(url + "events?run=nope")
            assert bad.status_code == 400 and "not a run id" in bad.text
            async with http.stream("GET", url + f"events?run={h.run_id}") as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                events, pinged = [], False
                async for line in resp.aiter_lines():
                    if line.startswith(":"):
                        pinged = True
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:]))
                        if events[-1]["kind"] == "hello":
                            await engine.signal(h.run_id, "go", 1)
                        if events[-1].get("status") == "completed":
                            break
                assert events[0]["kind"] == "hello" and events[-1]["run_id"] == str(h.run_id)
                assert pinged or len(events) >= 2
    finally:
        await asyncio.wait_for(server.stop(), 10)


async def _drain(stream) -> None:
    async for _ in stream:
        pass


async def _is(h, status: str) -> bool:
    return await h.status() == status


async def _is_id(engine, run_id: uuid.UUID, status: str) -> bool:
    return (await engine.info(run_id)).status == status


async def test_events_of_a_mounted_app_need_the_token_too(engine):
    """An embedder's create_app(engine, token=..., hub=hub) guards /events like its pages."""
    from durable.ui import create_app

    token = "mounted-events-token-1"
    hub = _hub(engine)
    await hub.start()
    try:
        app = create_app(engine, token=token, hub=hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console",
                                     timeout=10) as http:
            denied = await http.get("/events")
            assert denied.status_code == 401
    finally:
        await hub.stop()
