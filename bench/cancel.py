"""Cancelling a big tree: ``python -m bench.cancel``.

Two worker processes execute a tree of about 10,000 descendants, depth <= 10: inner runs
wait on their own children, a third of the leaves execute a long step (holding a lease),
a third sleep on a durable timer, a third wait for a signal (the sleeping and waiting
ones suspended and parked in their worker's memory). This process then cancels the root
and measures

* ``cascade_s`` — the cancel call: one transaction locking and cancelling the whole tree;
* ``all_stopped_s`` — from the start of the cancel until every execution in both workers
  has stopped (each worker reports when its executing + parked + loading runs reach 0;
  the workers heartbeat only every 20 s, so the cancel notification is what stops them).

It also checks that every run ended cancelled and that nothing was journaled after the
cascade. Env: ``DURABLE_DSN`` (embedded PostgreSQL when unset), ``BENCH_WORKERS``
(default 2). Last line: JSON with ``descendants``, ``cascade_s``, ``all_stopped_s``,
``build_s``, ``executing``, ``parked``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any

from pydantic import BaseModel

import durable
from bench.common import bench_schema, progress, run

WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
FAN = {0: 10, 1: 10, 2: 9, 3: 10}  # leaves at depth 4, plus a spine down to depth 10
LEAF_DEPTH = 4
MAX_DEPTH = 10


class Node(BaseModel):
    depth: int = 0
    index: int = 0
    spine: bool = True  # index 0 all the way down: continues below the leaves to MAX_DEPTH


@durable.step("bench.cancel.hold")
async def hold(seconds: float) -> None:
    await asyncio.sleep(seconds)


@durable.workflow("bench.cancel.node")
async def node(ctx: durable.Context, n: Node) -> int:
    if n.depth >= LEAF_DEPTH and not (n.spine and n.depth < MAX_DEPTH):
        kind = n.index % 3
        if kind == 0:
            await ctx.step(hold, 3600.0)
        elif kind == 1:
            await ctx.sleep(3600)
        else:
            await ctx.wait_signal("never")
        return 1
    fan = FAN.get(n.depth, 1)
    kids = [Node(depth=n.depth + 1, index=i, spine=n.spine and i == 0) for i in range(fan)]
    refs = await ctx.start_children(node, kids, key=lambda k: str(k.index))
    return 1 + sum(await ctx.gather(refs))


def tree_shape() -> dict[str, int]:
    """Runs of each kind the tree has (mirrors ``node``)."""
    out = {"inner": 0, "step": 0, "sleep": 0, "signal": 0}

    def walk(n: Node) -> None:
        if n.depth >= LEAF_DEPTH and not (n.spine and n.depth < MAX_DEPTH):
            out[("step", "sleep", "signal")[n.index % 3]] += 1
            return
        out["inner"] += 1
        for i in range(FAN.get(n.depth, 1)):
            walk(Node(depth=n.depth + 1, index=i, spine=n.spine and i == 0))

    walk(Node())
    return out


# --- worker process ----------------------------------------------------------------------


async def worker(dsn: str, schema: str) -> None:
    """Execute runs; on 'arm' report (once) when nothing executes here any more."""
    engine = durable.Engine(dsn, schema=schema, concurrency=20_000, max_parked=20_000, lease_ttl_s=60.0,
                            poll_interval_s=0.5, claim_batch=500, pool_size=20, metrics=False)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "exit")

    async with engine:
        threading.Thread(target=read_stdin, daemon=True).start()
        print("ready", engine.owner, flush=True)
        while True:
            cmd = await commands.get()
            if cmd == "count":
                print("count", len(engine.runs.active), len(engine.runs.parked), len(engine.runs.loading), flush=True)
            elif cmd == "arm":
                print("armed", flush=True)
                while engine.runs.active or engine.runs.parked or engine.runs.loading:
                    await asyncio.sleep(0.002)
                print("stopped", repr(time.time()), flush=True)
            elif cmd == "exit":
                break
        await engine.close(grace=1.0)


# --- the bench ----------------------------------------------------------------------------


class Worker:
    def __init__(self, dsn: str, schema: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.cancel", "--worker", dsn, schema],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.owner = self.expect("ready")[0]

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        parts = line.split()
        if not parts or parts[0] != word:
            raise RuntimeError(f"worker said {line!r}, expected {word!r}")
        return parts[1:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)


async def main() -> dict[str, Any]:
    shape = tree_shape()
    total = sum(shape.values())
    async with bench_schema("cancel") as (dsn, schema):
        workers = [await asyncio.to_thread(Worker, dsn, schema) for _ in range(WORKERS)]
        try:
            async with durable.Engine(dsn, schema=schema, execute=False, metrics=False) as client:
                progress(f"{WORKERS} workers up; building a tree of {total} runs ({total - 1} descendants): "
                         f"{shape['inner']} waiting on children, {shape['step']} in a long step, "
                         f"{shape['sleep']} sleeping, {shape['signal']} waiting for a signal")
                t0 = time.perf_counter()
                root = await client.start(node, Node())
                want = {"suspended": total - shape["step"], "running": shape["step"]}
                async with client.pool.connection() as conn:
                    while True:
                        cur = await conn.execute("SELECT status, count(*) FROM durable_runs GROUP BY status")
                        got = dict(await cur.fetchall())
                        if got == want:
                            break
                        if time.perf_counter() - t0 > 900:
                            raise RuntimeError(f"the tree was not built in 15 minutes: {got}")
                        progress(f"building: {got}")
                        await asyncio.sleep(2.0)
                    build_s = time.perf_counter() - t0
                    progress(f"tree built in {build_s:.1f} s")
                    executing = parked = 0
                    for w in workers:
                        w.send("count")
                        a, p, _ = (int(x) for x in await asyncio.to_thread(w.expect, "count"))
                        executing += a
                        parked += p
                        progress(f"worker {w.owner}: {a} executing, {p} parked")
                    await asyncio.sleep(1.0)  # settle
                    for w in workers:
                        w.send("arm")
                        await asyncio.to_thread(w.expect, "armed")
                    stops = [asyncio.create_task(asyncio.to_thread(w.expect, "stopped")) for w in workers]
                    wall0 = time.time()
                    t_c = time.perf_counter()
                    res = await client.cancel(root.run_id)
                    cascade_s = time.perf_counter() - t_c
                    progress(f"cascade: {int(res)} runs cancelled in {cascade_s:.3f} s")
                    stopped = [float((await s)[0]) for s in stops]
                    all_stopped_s = max(stopped) - wall0
                    progress(f"every execution stopped {all_stopped_s:.3f} s after the cancel began "
                             f"(per worker: {', '.join(f'{t - wall0:.3f}' for t in stopped)})")
                    cur = await conn.execute("SELECT count(*) FILTER (WHERE status <> 'cancelled'), count(*) "
                                             "FROM durable_runs")
                    not_cancelled, n = await cur.fetchone()  # type: ignore[misc]
                    (events,) = await (await conn.execute("SELECT count(*) FROM durable_events")).fetchone()  # type: ignore[misc]
                    await asyncio.sleep(1.0)
                    (events2,) = await (await conn.execute("SELECT count(*) FROM durable_events")).fetchone()  # type: ignore[misc]
                    if not_cancelled or n != total or int(res) != total or events2 != events:
                        raise RuntimeError(f"check failed: {not_cancelled} runs not cancelled, {n} runs, "
                                           f"{int(res)} cancelled, events {events} -> {events2}")
                    progress("checked: every run cancelled, nothing journaled after the cascade")
        finally:
            for w in workers:
                await asyncio.to_thread(w.close)
    return {"descendants": total - 1, "cascade_s": round(cascade_s, 4), "all_stopped_s": round(all_stopped_s, 4),
            "build_s": round(build_s, 1), "executing": executing, "parked": parked, "workers": WORKERS}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    else:
        run(main)
