"""The web console in a real browser: Debian's chromium, headless, driven by Playwright
(``executable_path=/usr/bin/chromium``: no browser download). The console is served by
:class:`durable.ui.serve.ConsoleServer` (the server of ``durable ui``) from the test's
engine, which executes the runs in-process.

Shown: the runs list shows a run started a moment before (and one started while the page is
open, without reloading it); filters narrow it; a run's page shows its timeline and its tree
for a 3-level tree with 100 children; a cancel from the console cancels the run and a page
watching it updates without reload; a signal sent from the run's page reaches the waiting
run. Screenshots go under the test's tmp_path; with DURABLE_UI_SCREENSHOTS=DIR the three
pages are also saved there (README's docs/ui-*.png: ``DURABLE_UI_SCREENSHOTS=docs pytest
tests/procs/test_ui_browser.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.async_api")

from durable.ui.serve import ConsoleServer  # noqa: E402

from helpers import eventually  # noqa: E402
from wf_lifecycle import TreeSpec, quick, tree, waiter  # noqa: E402

CHROMIUM = os.environ.get("DURABLE_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token-0123"
HAVE_CHROMIUM = shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists()
if not HAVE_CHROMIUM and os.environ.get("CI"):  # .ci/run installs it: under CI its absence is a failure
    raise RuntimeError(f"no chromium at {CHROMIUM}: .ci/run should have installed it (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"no chromium at {CHROMIUM} (apt-get install -y chromium; "
                                                          ".ci/run installs it)")


@pytest.fixture
async def console(engine):
    server = ConsoleServer(engine, host="127.0.0.1", port=0, token=TOKEN, poll_interval_s=0.3)
    url = await server.start()
    yield url.rstrip("/")
    await server.stop()


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            await b.close()


async def _page(browser: Any, base: str) -> Any:
    """A signed-in page (the login form sets the session cookie for the whole context)."""
    ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await ctx.new_page()
    page.set_default_timeout(15_000)
    await page.goto(f"{base}/login")
    await page.fill("input[name=token]", TOKEN)
    await page.click("form[action$='/login'] button")
    await page.wait_for_load_state()
    return page


async def _shot(page: Any, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    folder = os.environ.get("DURABLE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"ui-{name}.png"))


async def _mark(page: Any) -> None:
    """A value that survives in the page only as long as it is not reloaded or navigated."""
    await page.evaluate("window.__sameDocument = 42")


async def _not_reloaded(page: Any) -> bool:
    return await page.evaluate("window.__sameDocument === 42")


async def _status(engine, run_id) -> str:
    return (await engine.info(run_id)).status


def _row(run_id: Any) -> str:
    return f"#main a[href$='/runs/{run_id}']"


async def test_runs_list_shows_new_runs_and_filters_narrow_it(engine, console, browser, tmp_path):
    done = await engine.start(quick, 21)
    waiting = await engine.start(waiter, "go")
    await done.result(timeout=10)
    await eventually(lambda: _is(engine, waiting.run_id, "suspended"), 10, what="the waiter to wait")
    page = await _page(browser, console)
    await page.goto(f"{console}/")
    await page.wait_for_selector(_row(done.run_id))
    await page.wait_for_selector(_row(waiting.run_id))
    assert await page.get_attribute("#main", "data-live") == "runs"

    # a run started while the page is open appears without a reload
    await _mark(page)
    late = await engine.start(quick, 5)
    await page.wait_for_selector(_row(late.run_id), timeout=15_000)
    assert await _not_reloaded(page)
    await _shot(page, tmp_path, "runs")

    # filters narrow it: by workflow glob, then by status
    await page.fill("form.filters input[name=workflow]", "lc.quick")
    await page.click("form.filters button")
    await page.wait_for_load_state()
    assert await page.locator(_row(done.run_id)).count() == 1
    assert await page.locator(_row(waiting.run_id)).count() == 0
    await page.goto(f"{console}/?status=suspended")
    await page.wait_for_selector(_row(waiting.run_id))
    assert await page.locator(_row(done.run_id)).count() == 0
    assert await page.locator(_row(late.run_id)).count() == 0


async def test_run_page_shows_timeline_and_tree_of_100_children(engine, console, browser, tmp_path):
    root = await engine.start(tree, TreeSpec(max_depth=2, fan={0: 100, 1: 2}, leaves_from=1, leaf="signal"))

    async def all_started() -> bool:
        return await engine.count_runs(root=root.run_id) >= 103
    await eventually(all_started, 60, what="the tree's 103 runs")
    page = await _page(browser, console)
    await page.goto(f"{console}/runs/{root.run_id}")
    assert await page.get_attribute("#main", "data-live") == "run"
    assert await page.get_attribute("#main", "data-run-id") == str(root.run_id)
    # the timeline: the children it started
    assert await page.locator("#main ol.timeline li").count() >= 1
    # the tree: 100 children, grouped with counts by status; the grandchildren under child 0
    group = page.locator("#main ul.tree li.group")
    assert await group.count() == 1
    group_text = await group.inner_text()
    assert "100 × lc.tree" in group_text and "suspended" in group_text, group_text
    assert await page.locator(f"#main ul.tree a[href$='/runs/{root.run_id}']").count() >= 1
    timeline_text = await page.inner_text("#main ol.timeline")
    assert "100 × child lc.tree" in timeline_text, timeline_text
    await _shot(page, tmp_path, "run")
    # a child's page links its parent and root, and shows its own children
    child = (await engine.list_runs(parent=root.run_id, limit=200)).runs
    branching = next(c for c in child if c.child_key == "0")
    await page.goto(f"{console}/runs/{branching.id}")
    assert await page.locator(f"#main a[href$='/runs/{root.run_id}']").count() >= 1
    assert await page.locator("#main ul.tree li").count() >= 3


async def test_cancel_from_the_console_updates_a_watching_page_without_reload(engine, console, browser, tmp_path):
    h = await engine.start(waiter, "never")
    await eventually(lambda: _is(engine, h.run_id, "suspended"), 10, what="the run to wait")
    watcher = await _page(browser, console)
    await watcher.goto(f"{console}/runs/{h.run_id}")
    assert "suspended" in await watcher.inner_text("#main h1")
    await _mark(watcher)

    actor = await _page(browser, console)
    await actor.goto(f"{console}/runs/{h.run_id}")
    await actor.click("details:has(form[action$='/cancel']) summary")
    await actor.click("form[action$='/cancel'] button")
    await actor.wait_for_load_state()
    await eventually(lambda: _is(engine, h.run_id, "cancelled"), 10, what="the run to be cancelled")

    # the watching page changes in place: no navigation, no reload
    await watcher.locator("#main h1", has_text="cancelled").wait_for(timeout=15_000)
    assert await _not_reloaded(watcher)
    assert await watcher.get_attribute("#main", "data-live-updated") is not None
    await _shot(watcher, tmp_path, "cancelled")


async def test_signal_from_the_page_reaches_the_waiting_run(engine, console, browser, tmp_path):
    h = await engine.start(waiter, "approve")
    await eventually(lambda: _is(engine, h.run_id, "suspended"), 10, what="the run to wait")
    page = await _page(browser, console)
    await page.goto(f"{console}/runs/{h.run_id}")
    await page.click("details:has(form[action$='/signal']) summary")
    await page.fill("form[action$='/signal'] input[name=name]", "approve")
    await page.fill("form[action$='/signal'] textarea[name=payload]", '{"approved": true, "by": "<b>ops</b>"}')
    await page.click("form[action$='/signal'] button")
    await page.wait_for_load_state()
    assert await h.result(timeout=15) == {"approved": True, "by": "<b>ops</b>"}
    # the page comes to show the run completed (live, or already when it rendered after the POST)
    await page.locator("#main h1", has_text="completed").wait_for(timeout=15_000)
    assert "<b>ops</b>" in await page.inner_text("#main")  # shown as text, escaped
    await _shot(page, tmp_path, "signalled")


async def test_workers_page(engine, console, browser, tmp_path):
    page = await _page(browser, console)
    await page.goto(f"{console}/workers")
    assert await page.get_attribute("#main", "data-live") == "workers"
    assert engine.owner.split(":")[0] in await page.inner_text("#main") or \
        await page.locator("#main table").count() >= 1
    await _shot(page, tmp_path, "workers")


async def _is(engine, run_id, status: str) -> bool:
    return await _status(engine, run_id) == status
