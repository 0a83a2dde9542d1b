"""What the examples share: the runner behind ``python -m examples.NAME`` and a step
that sends a signal to another run (steps talk to the outside world through a client;
here it is the engine of this process)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import durable

_engine: durable.Engine | None = None


def bind(engine: durable.Engine) -> None:
    """Make ``engine`` the client that steps of the examples use."""
    global _engine
    _engine = engine


def client() -> durable.Engine:
    if _engine is None:
        raise RuntimeError("no engine bound: call examples._common.bind(engine) before starting runs")
    return _engine


@durable.step("examples.send_signal")
async def send_signal(run_id: str, name: str, payload: Any, delivery_id: str) -> bool:
    """Signal another run. The delivery id makes the at-least-once step deliver once."""
    return await client().signal(run_id, name, payload, delivery_id=delivery_id)


def run_example(main: Callable[[durable.Engine], Awaitable[dict[str, Any]]], title: str) -> None:
    """Open an Engine (DURABLE_DSN, else embedded PostgreSQL), run ``main``, print results."""

    async def go() -> None:
        print(f"{title}\n")
        started = time.monotonic()
        async with durable.Engine() as engine:
            results = await main(engine)
        for name, value in results.items():
            print(f"▸ {name}")
            text = json.dumps(value, default=str)
            if len(text) > 100:
                text = json.dumps(value, default=str, indent=2)
            print("  " + text.replace("\n", "\n  "))
        print(f"\ndone in {time.monotonic() - started:.2f} s")

    try:
        asyncio.run(go())
    except durable.DurableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
