"""The web console's routes (issue 16) against real PostgreSQL, through httpx's ASGI
transport (the async form of Starlette's TestClient: the app runs on the test's event
loop, next to the engine's pool): every page, filters and paging, 404/400 pages, the access
token and CSRF checks, read-only mode, actions that change runs (checked in the database)
and actions refused (nothing written), escaping, a 3-level tree with 100 children grouped."""

from __future__ import annotations

import re
import uuid
from typing import Any, AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import durable
from durable.ui import create_app

import wf_ui as W
from helpers import ROOT, eventually, rows, status_of

TOKEN = "s3cret-token-for-tests"


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def ui(engine: durable.Engine) -> AsyncIterator[httpx.AsyncClient]:
    """A console without a page token (pages open, actions need the token), signed in."""
    async with client(create_app(engine, token=TOKEN)) as c:
        r = await c.get("/login", params={"token": TOKEN})
        assert r.status_code == 303 and "durable_session" in r.cookies
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


async def page_csrf(c: httpx.AsyncClient, run_id: Any) -> str:
    r = await c.get(f"/runs/{run_id}")
    assert r.status_code == 200
    return csrf_of(r.text)


async def waiting_inbox(engine: durable.Engine, note: Any = "n", **kw: Any) -> uuid.UUID:
    h = await engine.start(W.inbox, note, **kw)
    await eventually(lambda: _suspended(engine, h.run_id), what="the inbox run to wait for its signal")
    return h.run_id


async def _suspended(engine: durable.Engine, rid: uuid.UUID) -> bool:
    return (await engine.info(rid)).status == "suspended"


async def test_every_page_renders(engine, ui):
    rid = await waiting_inbox(engine, {"customer": "c1"})
    failed = await engine.start(W.fail, "card refused")
    with pytest.raises(durable.RunFailedError):
        await failed.result(timeout=20)

    r = await ui.get("/")
    assert r.status_code == 200
    assert 'id="main" data-live="runs"' in r.text and "/static/live.js" in r.text
    assert str(rid)[:8] in r.text and "ui.inbox" in r.text and "v1" in r.text
    assert "Declined: card refused" in r.text  # the root cause of the failure
    assert re.search(r"failed <b>1</b>", r.text) and re.search(r"suspended <b>1</b>", r.text)

    r = await ui.get(f"/runs/{rid}")
    assert r.status_code == 200
    assert f'data-live="run" data-run-id="{rid}"' in r.text
    assert "step ui.prepare" in r.text and "&#34;customer&#34;" in r.text  # timeline, input (escaped JSON)
    assert "Send a signal" in r.text and "Cancel" in r.text

    await engine.signal(rid, "later", {"x": "<i>"}, delivery_id="d-1")  # a name the run does not wait for
    r = await ui.get(f"/runs/{rid}")
    assert "Pending signals" in r.text and "later" in r.text and "d-1" in r.text and "<i>" not in r.text

    r = await ui.get(f"/runs/{failed.run_id}")
    assert "Declined" in r.text and "card refused" in r.text and "Traceback" in r.text
    assert "Resume" in r.text and "Restart" in r.text

    r = await ui.get("/workers")
    assert r.status_code == 200 and 'data-live="workers"' in r.text
    assert engine.owner.split(":")[0] in r.text or "alive" in r.text

    # the fragment: only main's inner HTML, same filters
    r = await ui.get("/", params={"fragment": "main", "workflow": "ui.fail"})
    assert r.status_code == 200 and "<html" not in r.text and "<main" not in r.text
    assert str(failed.run_id)[:8] in r.text and str(rid)[:8] not in r.text
    r = await ui.get(f"/runs/{rid}", params={"fragment": "main"})
    assert "<html" not in r.text and "step ui.prepare" in r.text
    r = await ui.get("/workers", params={"fragment": "main"})
    assert "<html" not in r.text and "Workers" in r.text

    r = await ui.get("/static/console.css")
    assert r.status_code == 200 and "timeline" in r.text


async def test_filters_narrow_and_paging(engine, ui):
    a = await engine.start(W.leaf, 1, queue="nowhere", attributes={"customer": "c1"})
    b = await engine.start(W.leaf, 2, queue="nowhere", attributes={"customer": "c2"})
    c = await engine.start(W.fail, "x", queue="elsewhere", key="order-42")
    ids = {k: str(v.run_id)[:8] for k, v in (("a", a), ("b", b), ("c", c))}

    async def shown(**params: Any) -> set[str]:
        r = await ui.get("/", params={**params, "fragment": "main"})
        assert r.status_code == 200, r.text
        return {k for k, v in ids.items() if v in r.text}

    assert await shown() == {"a", "b", "c"}
    assert await shown(queue="nowhere") == {"a", "b"}
    assert await shown(workflow="ui.f*") == {"c"}
    assert await shown(attr="customer=c2") == {"b"}
    assert await shown(status="pending", queue="nowhere") == {"a", "b"}
    assert await shown(status="failed") == set()
    assert await shown(since="1h") == {"a", "b", "c"}
    assert await shown(**{"from": "2999-01-01T00:00"}) == set()
    # free text: an id prefix, an idempotency key
    r = await ui.get("/", params={"q": str(b.run_id)[:10]})
    assert f"/runs/{b.run_id}" in r.text
    r = await ui.get("/", params={"q": "order-42"})
    assert f"/runs/{c.run_id}" in r.text and "key <code>order-42</code>" in r.text

    # paging: 2 per page... the page sizes are fixed; 20 runs make a second page of 20
    for i in range(20):
        await engine.start(W.leaf, i, queue="paged")
    r = await ui.get("/", params={"queue": "paged", "limit": "20"})
    assert r.text.count('class="st pending"') == 20
    nxt = re.search(r'class="next" href="/\?([^"]+)"', r.text)
    assert nxt is None  # exactly 20: no next page
    await engine.start(W.leaf, 99, queue="paged")
    r = await ui.get("/", params={"queue": "paged", "limit": "20"})
    nxt = re.search(r'class="next" href="/\?([^"]+)"', r.text)
    assert nxt, "a next page link"
    r2 = await ui.get("/?" + nxt.group(1).replace("&amp;", "&"))
    assert r2.status_code == 200 and r2.text.count('class="st pending"') == 1


async def test_bad_filters_are_400_naming_the_filter(engine, ui):
    for params, needle in (({"status": "broken"}, "status"), ({"since": "soon"}, "since"),
                           ({"from": "yesterday"}, "from"), ({"attr": "novalue"}, "attr"),
                           ({"limit": "7"}, "limit"), ({"cursor": "nope"}, "cursor"),
                           ({"attr": "nokey=1"}, "nokey")):
        r = await ui.get("/", params=params)
        assert r.status_code == 400, (params, r.text)
        assert "Bad filter" in r.text and needle in r.text, params


async def test_unknown_run_is_a_404_that_says_what_to_check(ui):
    r = await ui.get(f"/runs/{uuid.uuid4()}")
    assert r.status_code == 404 and "Run not found" in r.text and "schema" in r.text
    r = await ui.get("/runs/not-a-uuid")
    assert r.status_code == 404 and "not a run id" in r.text
    r = await ui.get("/no/such/page")
    assert r.status_code == 404


async def test_token_required_for_pages_when_set_and_for_actions_always(engine, db):
    rid = await waiting_inbox(engine)
    app = create_app(engine, token=TOKEN)
    async with client(app) as c:
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        r = await c.get(f"/runs/{rid}", params={"fragment": "main"})
        assert r.status_code == 401
        r = await c.get("/login")
        assert r.status_code == 200
        form = {"token": "wrong-token!", "csrf": csrf_of(r.text), "next": "/workers"}
        r = await c.post("/login", data=form)
        assert r.status_code == 401 and "not this console" in r.text
        r = await c.post("/login", data={**form, "token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/workers"
        set_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and TOKEN not in set_cookie
        assert (await c.get("/")).status_code == 200
    # bearer header
    async with client(app) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        r = await c.get("/", headers={"Authorization": "Bearer nope-nope"})
        assert r.status_code == 303
    with pytest.raises(durable.ConfigurationError, match="at least 8 characters"):
        create_app(engine, token="short")
    # no page token: pages are open, actions are not
    open_app = create_app(engine)
    assert isinstance(open_app.state.token, str) and len(open_app.state.token) >= 16
    async with client(open_app) as c:
        r = await c.get(f"/runs/{rid}")
        assert r.status_code == 200 and "sign in" in r.text
        r = await c.post(f"/runs/{rid}/cancel", data={"csrf": csrf_of(r.text)})
        assert r.status_code == 401 and "access token" in r.text
    assert await status_of(db, rid) == "suspended"  # nothing written


async def test_csrf_checked_on_every_post(engine, db, ui):
    rid = await waiting_inbox(engine)
    for data in ({}, {"csrf": "0" * 64}, {"csrf": ""}):
        r = await ui.post(f"/runs/{rid}/cancel", data=data)
        assert r.status_code == 403 and "CSRF" in r.text, data
        r = await ui.post(f"/runs/{rid}/signal", data={**data, "name": "go", "payload": "1"})
        assert r.status_code == 403
    # a CSRF field from another session's cookie does not fit this one's
    async with client(create_app(engine, token=TOKEN)) as other:
        await other.get("/login", params={"token": TOKEN})
        foreign = csrf_of((await other.get(f"/runs/{rid}")).text)
    own = await page_csrf(ui, rid)
    assert foreign != own
    r = await ui.post(f"/runs/{rid}/cancel", data={"csrf": foreign})
    assert r.status_code == 403
    r = await ui.post("/logout", data={"csrf": "x"})
    assert r.status_code == 403
    assert await status_of(db, rid) == "suspended"
    assert await rows(db, "SELECT count(*) FROM durable_signals WHERE run_id = %s", rid) == [(0,)]


async def test_read_only_hides_and_refuses_actions(engine, db):
    rid = await waiting_inbox(engine)
    async with client(create_app(engine, token=TOKEN, read_only=True)) as c:
        await c.get("/login", params={"token": TOKEN})
        r = await c.get(f"/runs/{rid}")
        assert r.status_code == 200 and "read-only" in r.text
        assert "/cancel" not in r.text and "/signal" not in r.text and "Restart" not in r.text
        r = await c.post(f"/runs/{rid}/cancel", data={"csrf": csrf_of(r.text)})
        assert r.status_code == 403 and "read-only" in r.text
    assert await status_of(db, rid) == "suspended"


async def test_signal_from_the_page_reaches_the_run_and_bad_json_is_refused(engine, db, ui):
    rid = await waiting_inbox(engine)
    csrf = await page_csrf(ui, rid)
    r = await ui.post(f"/runs/{rid}/signal", data={"csrf": csrf, "name": "go", "payload": "{approved: yes}"})
    assert r.status_code == 400 and "not JSON" in r.text and "line 1 column 2" in r.text
    r = await ui.post(f"/runs/{rid}/signal", data={"csrf": csrf, "name": "", "payload": "1"})
    assert r.status_code == 400 and "name" in r.text
    assert await rows(db, "SELECT count(*) FROM durable_signals WHERE run_id = %s", rid) == [(0,)]
    r = await ui.post(f"/runs/{rid}/signal", data={"csrf": csrf, "name": "go", "payload": '{"approved": true}'})
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}?notice=signalled"
    assert await engine.result(rid, timeout=20) == {"got": {"approved": True}, "note": "n"}
    r = await ui.get(r.headers["location"])
    assert "Signal sent." in r.text
    # the run finished: another signal is refused, nothing written
    r = await ui.post(f"/runs/{rid}/signal", data={"csrf": csrf, "name": "go", "payload": "2"})
    assert r.status_code == 409 and "already completed" in r.text
    assert await rows(db, "SELECT count(*) FROM durable_signals WHERE run_id = %s", rid) == [(1,)]


async def test_cancel_and_resume_through_the_page(engine, db, ui):
    rid = await waiting_inbox(engine)
    csrf = await page_csrf(ui, rid)
    r = await ui.post(f"/runs/{rid}/cancel", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}?notice=cancelled"
    assert await status_of(db, rid) == "cancelled"
    r = await ui.get(r.headers["location"])
    assert "Run cancelled" in r.text and "Resume" in r.text
    # cancelling again: refused, nothing written
    before = await rows(db, "SELECT finished_at, error FROM durable_runs WHERE id = %s", rid)
    r = await ui.post(f"/runs/{rid}/cancel", data={"csrf": csrf})
    assert r.status_code == 409 and "already cancelled" in r.text
    assert await rows(db, "SELECT finished_at, error FROM durable_runs WHERE id = %s", rid) == before
    # resume: the same run runs again (and waits for its signal again)
    r = await ui.post(f"/runs/{rid}/resume", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}?notice=resumed"
    await eventually(lambda: _suspended(engine, rid), what="the resumed run to wait again")
    r = await ui.get(f"/runs/{rid}")
    assert "resumed" in r.text and "superseded" in r.text
    # restart and fork make new runs
    r = await ui.post(f"/runs/{rid}/restart", data={"csrf": csrf})
    assert r.status_code == 303 and "notice=restarted" in r.headers["location"]
    new = uuid.UUID(r.headers["location"].split("/runs/")[1].split("?")[0])
    assert new != rid
    r = await ui.get(f"/runs/{new}")
    assert f"/runs/{rid}" in r.text and "restart of" in r.text  # the origin link
    r = await ui.post(f"/runs/{rid}/fork", data={"csrf": csrf, "at": "999"})
    assert r.status_code == 400
    r = await ui.post(f"/runs/{rid}/fork", data={"csrf": csrf, "at": "x"})
    assert r.status_code == 400 and "Bad position" in r.text
    r = await ui.post(f"/runs/{rid}/fork", data={"csrf": csrf, "at": "1"})
    assert r.status_code == 303 and "notice=forked" in r.headers["location"]


async def test_resume_of_a_completed_run_is_refused(engine, db, ui):
    h = await engine.start(W.leaf, 5)
    assert await h.result(timeout=20) == 5
    csrf = await page_csrf(ui, h.run_id)
    r = await ui.post(f"/runs/{h.run_id}/resume", data={"csrf": csrf})
    assert r.status_code == 409 and "Cannot resume" in r.text
    r = await ui.post(f"/runs/{h.run_id}/cancel", data={"csrf": csrf})
    assert r.status_code == 409
    assert await status_of(db, h.run_id) == "completed"
    r = await ui.post(f"/runs/{uuid.uuid4()}/cancel", data={"csrf": csrf})
    assert r.status_code == 404


async def test_payloads_and_attributes_are_escaped(engine, ui):
    evil = "<script>alert(1)</script>"
    h = await engine.start(W.leaf, 1, queue="nowhere", attributes={"note": evil}, key=evil)
    for url in ("/", f"/runs/{h.run_id}", "/?" + httpx.QueryParams({"q": evil, "workflow": evil}).__str__()):
        r = await ui.get(url)
        assert r.status_code in (200, 400), url
        assert evil not in r.text, url
    r = await ui.get(f"/runs/{h.run_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    f = await engine.start(W.fail, evil)
    with pytest.raises(durable.RunFailedError):
        await f.result(timeout=20)
    for url in ("/", f"/runs/{f.run_id}"):
        r = await ui.get(url)
        assert evil not in r.text and "&lt;script&gt;" in r.text
    r = await ui.post(f"/runs/{h.run_id}/{evil}", data={})
    assert evil not in r.text


async def test_three_level_tree_with_100_children_renders_grouped(engine, ui):
    h = await engine.start(W.top, 100)
    assert await h.result(timeout=60) == sum(range(100))
    r = await ui.get(f"/runs/{h.run_id}")
    assert r.status_code == 200
    assert "102 run(s)" in r.text
    assert "100 × ui.leaf" in r.text and "leaf-*" in r.text and "100 completed" in r.text
    assert r.text.count('class="st completed"') < 40  # grouped, not 100 rows
    assert "ui.mid" in r.text and ">mid<" in r.text
    # the middle run's page: its parent and root links, its own tree of 101
    page = await engine.list_runs(workflow="ui.mid")
    m = page.runs[0]
    r = await ui.get(f"/runs/{m.id}")
    assert f"/runs/{h.run_id}" in r.text and "101 run(s)" in r.text and "100 × ui.leaf" in r.text
    # the timeline lists the children it started with their status
    assert "child" in r.text


async def test_the_app_mounts_under_a_prefix(engine):
    outer = Starlette(routes=[Mount("/durable", create_app(engine, token=TOKEN))])
    rid = await waiting_inbox(engine)
    async with client(outer) as c:
        r = await c.get("/durable/")
        assert r.status_code == 303 and r.headers["location"].startswith("/durable/login?next=%2Fdurable%2F")
        r = await c.get("/durable/login", params={"token": TOKEN, "next": f"/durable/runs/{rid}"})
        assert r.status_code == 303 and r.headers["location"] == f"/durable/runs/{rid}"
        assert "path=/durable/" in r.headers["set-cookie"].lower()
        r = await c.get(f"/durable/runs/{rid}")
        assert r.status_code == 200
        assert 'href="/durable/static/console.css"' in r.text and '<body data-base="/durable">' in r.text and f'action="/durable/runs/{rid}/cancel"' in r.text
        r = await c.post(f"/durable/runs/{rid}/cancel", data={"csrf": csrf_of(r.text), "graceful": "1"})
        assert r.status_code == 303 and r.headers["location"] == f"/durable/runs/{rid}?notice=cancel_asked"
        # an offsite next= is not followed
        r = await c.get("/durable/login", params={"token": TOKEN, "next": "//evil.example/"})
        assert r.headers["location"] == "/durable/"
    await eventually(lambda: _cancelled(engine, rid), what="the graceful cancel to end the run")


async def _cancelled(engine: durable.Engine, rid: uuid.UUID) -> bool:
    return (await engine.info(rid)).status == "cancelled"


async def test_counts_by_status_are_capped_and_say_so(engine, ui):
    for i in range(3):
        await engine.start(W.leaf, i, queue="nowhere")
    assert await engine.count_runs_by_status(queue="nowhere") == ({"pending": 3}, False)
    assert await engine.count_runs_by_status(queue="nowhere", cap=2) == ({"pending": 2}, True)
    with pytest.raises(durable.ConfigurationError):
        await engine.count_runs_by_status(cap=0)
    r = await ui.get("/", params={"queue": "nowhere"})
    assert "pending <b>3</b>" in r.text and "newest 10,000" not in r.text


async def test_readme_example_mounts_the_console(db, monkeypatch):
    """The README's Web console block, as written: the engine opens in the app's lifespan."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Web console\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no python block under '## Web console'"
    monkeypatch.setenv("DURABLE_DSN", db.dsn)
    monkeypatch.setenv("DURABLE_SCHEMA", db.schema)
    monkeypatch.setenv("DURABLE_UI_TOKEN", TOKEN)
    scope: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)

    app = scope["app"]
    async with client(app) as c:
        # before the lifespan opened the engine: 503, saying what to do
        r = await c.get("/durable/login")
        assert r.status_code == 503 and "lifespan" in r.text
        async with app.router.lifespan_context(app):  # what uvicorn runs around serving
            assert (await c.get("/durable/")).status_code == 303
            await c.get("/durable/login", params={"token": TOKEN})
            r = await c.get("/durable/workers")
            assert r.status_code == 200 and 'data-live="workers"' in r.text


async def test_continue_as_new_chain_is_followed_and_its_first_link_refuses_actions(engine, db, ui):
    h = await engine.start(W.chain, 0)
    first = h.run_id

    async def successor() -> Any:
        info = await engine.info(first)
        return info.continued_to if info.status == "continued" else None

    nxt = await eventually(successor, what="the run to continue as new")
    await eventually(lambda: _suspended(engine, nxt), what="the successor to wait for its signal")
    r = await ui.get(f"/runs/{first}")
    assert "continued as new" in r.text and f"/runs/{nxt}" in r.text and "round-0" in r.text and "round-1" in r.text
    assert f"/runs/{first}/cancel" not in r.text and "its successor" in r.text
    r = await ui.post(f"/runs/{first}/cancel", data={"csrf": csrf_of(r.text)})
    assert r.status_code == 409 and "continued as new" in r.text
    assert await status_of(db, nxt) == "suspended"
    r = await ui.get(f"/runs/{nxt}")
    assert f"/runs/{first}" in r.text and "continues" in r.text  # the chain link back
