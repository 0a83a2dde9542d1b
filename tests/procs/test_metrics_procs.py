"""Metrics of a dispatcher scraped while another process starts the runs (issue 14).

A dispatcher subprocess executes tests/support/wf_metrics.py and serves /metrics; the
test process is a pure client (``Engine(execute=False)``) that only starts, cancels and
waits. What the dispatcher exports must be complete: runs and children counted where they
begin executing, every registered workflow and the lease-loss series present at 0 from the
start, a cancel of a suspended or a running run ended as 'cancelled' (not a lease loss), the process
collectors and durable_build_info present, and no ``*_created`` series.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import durable
import wf_metrics  # noqa: F401  (registers metrics.* here too: the client starts them)
from helpers import SUPPORT, ROOT, eventually, status_of

from test_dispatcher import DispatcherProc

N = 25
CHILDREN = 4


@pytest.fixture
def dispatcher(db, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SUPPORT)])}
    env.pop("DURABLE_DSN", None)
    args = ["-m", "wf_metrics", "--dsn", db.dsn, "--schema", db.schema, "--metrics-port", "0",
            "--log-format", "json", "--poll-interval", "0.5", "--concurrency", "20"]
    proc = DispatcherProc(args, tmp_path / "dispatcher.log", env)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_dispatcher_metrics_while_a_client_starts_the_runs(db, dispatcher):
    port = dispatcher.ready["metrics_port"]

    # before any run: every registered workflow listed, the lease-loss series at 0
    text, s = await asyncio.to_thread(scrape, port)
    for wf in ("metrics.one", "metrics.child", "metrics.parent", "metrics.waits", "metrics.busy",
               "metrics.idle"):
        assert sample(s, "durable_runs_started_total", workflow=wf, queue="default") == 0, wf
        assert sample(s, "durable_lease_lost_total", workflow=wf) == 0, wf
    for reason in ("terminal", "cancelled", "lease_lost"):
        assert sample(s, "durable_executions_ended_total", reason=reason) == 0, reason
    assert sample(s, "process_cpu_seconds_total") is not None
    assert sample(s, "process_resident_memory_bytes") is not None
    build = [k for k in s if k[0] == "durable_build_info"]
    assert len(build) == 1 and s[build[0]] == 1
    assert {"version", "python"} <= {k for k, _ in build[0][1]}
    created = [line for line in text.splitlines() if not line.startswith("#") and "_created" in line.split(" ")[0]]
    assert not created, created[:5]

    async with durable.Engine(db.dsn, schema=db.schema, execute=False, pool_size=4) as client:
        handles = [await client.start(wf_metrics.one, i) for i in range(N)]
        parent = await client.start(wf_metrics.parent, CHILDREN)
        assert [await h.result(timeout=60) for h in handles] == [i + 1 for i in range(N)]
        assert await parent.result(timeout=60) == sum(range(1, CHILDREN + 1))

        def counted() -> bool:
            _, got = scrape(port)
            return sample(got, "durable_runs_finished_total", workflow="metrics.one", queue="default",
                          outcome="completed") == N
        await eventually(lambda: asyncio.to_thread(counted), 20, what="the dispatcher's finished count")
        _, s = await asyncio.to_thread(scrape, port)
        assert sample(s, "durable_runs_started_total", workflow="metrics.one", queue="default") == N
        assert sample(s, "durable_runs_started_total", workflow="metrics.parent", queue="default") == 1
        assert sample(s, "durable_runs_started_total", workflow="metrics.child", queue="default") == CHILDREN
        assert sample(s, "durable_children_started_total", workflow="metrics.child") == CHILDREN
        assert sample(s, "durable_children_finished_total", workflow="metrics.child", outcome="completed") == CHILDREN
        # the dispatcher created only the children; the client's starts are not its own
        assert sample(s, "durable_runs_requested_total", workflow="metrics.one", queue="default") == 0
        assert sample(s, "durable_runs_requested_total", workflow="metrics.child", queue="default") == CHILDREN
        assert sample(s, "durable_runs_started_total", workflow="metrics.idle", queue="default") == 0

        # an ordinary cancel of a suspended run: ended as 'cancelled', never a lease loss
        waiting = await client.start(wf_metrics.waits)
        await eventually(lambda: _is(db, waiting.run_id, "suspended"), 20, what="the run to suspend")
        assert await client.cancel(waiting.run_id) == 1

        def ended_cancelled() -> bool:
            _, got = scrape(port)
            return sample(got, "durable_executions_ended_total", reason="cancelled") == 1
        await eventually(lambda: asyncio.to_thread(ended_cancelled), 20, what="the parked execution to end")
        _, s = await asyncio.to_thread(scrape, port)
        assert sample(s, "durable_executions_ended_total", reason="lease_lost") == 0
        assert sample(s, "durable_lease_lost_total", workflow="metrics.waits") == 0
        assert sum(v for (name, _), v in s.items() if name == "durable_lease_lost_total") == 0
        assert sample(s, "durable_runs_started_total", workflow="metrics.waits", queue="default") == 1

        # and a cancel of a run executing a step (holding its lease): 'cancelled' too
        running = await client.start(wf_metrics.busy, 30.0)
        await eventually(lambda: _is(db, running.run_id, "running"), 20, what="the run to execute")
        assert await client.cancel(running.run_id) == 1

        def ended_cancelled_twice() -> bool:
            _, got = scrape(port)
            return sample(got, "durable_executions_ended_total", reason="cancelled") == 2
        await eventually(lambda: asyncio.to_thread(ended_cancelled_twice), 20, what="the running execution to end")
        _, s = await asyncio.to_thread(scrape, port)
        assert sample(s, "durable_executions_ended_total", reason="lease_lost") == 0
        assert sum(v for (name, _), v in s.items() if name == "durable_lease_lost_total") == 0
        assert sample(s, "durable_runs_in_flight") == 0


async def _is(db: Any, run_id: Any, status: str) -> bool:
    return await status_of(db, run_id) == status
