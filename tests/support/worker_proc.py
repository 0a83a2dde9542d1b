"""A bare worker process for tests: an Engine executing runs until SIGTERM/SIGINT.

    python tests/support/worker_proc.py DSN SCHEMA MODULE[,MODULE...] [--queues q1,q2]
        [--lease-ttl S] [--poll S] [--concurrency N] [--max-depth N]

Prints 'ready <owner>' on stdout once the engine is open. (The dispatcher daemon is
the production form of this; tests use this one to control every knob directly.)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/support: the wf_* modules
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository (durable)
sys.path.insert(0, HERE)

import durable  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dsn")
    p.add_argument("schema")
    p.add_argument("modules")
    p.add_argument("--queues", default="default")
    p.add_argument("--lease-ttl", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--grace", type=float, default=10.0)
    a = p.parse_args()
    for m in a.modules.split(","):
        importlib.import_module(m)
    engine = durable.Engine(a.dsn, schema=a.schema, queues=tuple(a.queues.split(",")),
                            lease_ttl_s=a.lease_ttl, poll_interval_s=a.poll, concurrency=a.concurrency,
                            max_child_depth=a.max_depth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with engine:
        print("ready", engine.owner, flush=True)
        await stop.wait()
        await engine.close(grace=a.grace)


if __name__ == "__main__":
    asyncio.run(main())
