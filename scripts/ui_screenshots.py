"""The README's screenshots of the web console (docs/ui-runs.png, ui-run.png, ui-workers.png).

    DURABLE_DSN=postgresql://... python scripts/ui_screenshots.py [DIR]

Fills a fresh schema with a few runs of every kind (completed with a retried step, failed
with a cause chain, waiting for a signal, a nightly batch of 40 children of which some
wait), serves the console from this process (``durable.ui.serve.ConsoleServer``) and takes
the three pages (the runs list: top-level runs) with Debian's chromium (``/usr/bin/chromium``, headless, via Playwright).
The schema is dropped at the end. Needs ``pip install -e '.[dev]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

from playwright.async_api import async_playwright
from psycopg import sql

import durable
from durable.store.connections import connect, resolve_dsn
from durable.ui.serve import ConsoleServer

CHROMIUM = "/usr/bin/chromium"
TRIES: dict[str, int] = {}


@durable.step(retry=durable.RetryPolicy(initial_interval=0.05, max_attempts=3))
async def charge(order: str) -> str:
    TRIES[order] = TRIES.get(order, 0) + 1
    if TRIES[order] == 1:
        raise ConnectionError("payment gateway timed out")
    return f"ch_{order}"


@durable.step
async def reserve(order: str) -> int:
    return 1


@durable.step(retry=durable.RetryPolicy(initial_interval=0.05, max_attempts=2))
async def refund_card(order: str) -> None:
    raise durable.ApplicationError(f"card of {order} expired", type="CardExpired", non_retryable=True)


@durable.workflow("orders.checkout")
async def checkout(ctx: durable.Context, order: str) -> dict[str, str]:
    await ctx.step(reserve, order)
    return {"order": order, "charge": await ctx.step(charge, order)}


@durable.workflow("orders.refund")
async def refund(ctx: durable.Context, order: str) -> None:
    await ctx.step(refund_card, order)


@durable.workflow("approvals.wait")
async def approval(ctx: durable.Context, order: str) -> object:
    return await ctx.wait_signal("approve")


@durable.workflow("batch.item")
async def item(ctx: durable.Context, n: int) -> int:
    await ctx.step(reserve, str(n))
    if n % 7 == 3:
        await ctx.wait_signal("approve")
    return n


@durable.workflow("batch.nightly")
async def nightly(ctx: durable.Context, n: int) -> int:
    await ctx.step(reserve, "batch")
    await ctx.sleep(0.2)
    await ctx.child(checkout, "B-1", key="first")
    refs = await ctx.start_children(item, range(n), key=lambda i: f"item-{i}")
    return sum(await ctx.gather(refs))


async def main(folder: Path) -> None:
    dsn = await resolve_dsn(None)
    schema = f"screens_{uuid.uuid4().hex[:8]}"
    try:
        async with durable.Engine(dsn, schema=schema) as engine:
            for i in range(4):
                await engine.run(checkout, f"A-10{i}", timeout=30)
            for i in range(2):
                h = await engine.start(refund, f"R-20{i}")
                with contextlib.suppress(durable.RunFailedError):
                    await h.result(timeout=30)
            await engine.start(approval, "A-300")
            root = await engine.start(nightly, 40)
            await asyncio.sleep(3)  # the batch's children run or wait
            server = ConsoleServer(engine, host="127.0.0.1", port=0)
            url = (await server.start()).rstrip("/")
            try:
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                      args=["--no-sandbox", "--disable-gpu"])
                    page = await browser.new_page(viewport={"width": 1200, "height": 760})
                    folder.mkdir(parents=True, exist_ok=True)
                    for name, path, height in (("runs", "/?top=1", 540), ("run", f"/runs/{root.run_id}", 760),
                                                ("workers", "/workers", 330)):
                        await page.set_viewport_size({"width": 1200, "height": height})
                        await page.goto(url + path)
                        await page.wait_for_load_state("networkidle")
                        await page.screenshot(path=str(folder / f"ui-{name}.png"))
                        print(folder / f"ui-{name}.png")
                    await browser.close()
            finally:
                await server.stop()
    finally:
        conn = await connect(dsn, schema="public", timeout=30)
        try:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
