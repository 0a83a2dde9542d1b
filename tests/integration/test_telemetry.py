"""Telemetry end to end: the engine's hook events and the Prometheus metrics they feed.

* a fan-out of N children, scraped over HTTP from engine.start_metrics_server(): exactly
  N children started, N completed, N wake-latency observations (one per child outcome);
* every event the core emits matches the catalog in durable.hooks (names and fields);
* handlers that raise (on run.*, step.*, child.* and *) change no run's outcome or result;
* a cascade cut at the depth limit emits cascade.truncated and moves its counter.
(The handler API itself, without an engine: tests/unit/test_hooks_api.py.)

REGISTRY is process-global and other tests share it: counters are read as deltas, or
under workflow labels only this module uses.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from collections import defaultdict
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import durable
from durable.observe import hooks, metrics
from durable.errors import ChildCancelledError, ChildFailedError, ConfigurationError, RunFailedError
from helpers import eventually

N = 25

# --- workflows (module level: registration is global per process) ------------------------


@durable.step
async def double(x: int) -> int:
    return 2 * x


@durable.workflow("telemetry.leaf")
async def leaf(ctx: durable.Context, n: int) -> int:
    return await ctx.step(double, n)


@durable.workflow("telemetry.fanout")
async def fanout(ctx: durable.Context, n: int) -> int:
    refs = await ctx.start_children(leaf, list(range(n)))
    return sum(await ctx.gather(refs))


_attempts: dict[str, int] = defaultdict(int)


@durable.step("telemetry.flaky", retry=durable.RetryPolicy(initial_interval=0.0, max_attempts=3))
async def flaky(tag: str) -> str:
    _attempts[tag] += 1
    if _attempts[tag] == 1:
        raise ConnectionError("first attempt fails")
    return f"{tag}:{_attempts[tag]}"


@durable.step("telemetry.explode", retry=durable.RetryPolicy(max_attempts=1))
async def explode(tag: str) -> str:
    raise ValueError(f"boom {tag}")


@durable.workflow("telemetry.failing")
async def failing(ctx: durable.Context, tag: str) -> str:
    return await ctx.step(explode, tag)


@durable.workflow("telemetry.hooked")
async def hooked(ctx: durable.Context, tag: str) -> dict:
    a = await ctx.step(flaky, tag)
    c = await ctx.child(leaf, 3)
    try:
        await ctx.child(failing, tag)
        err = "none"
    except ChildFailedError as exc:
        err = type(exc).__name__
    return {"a": a, "c": c, "err": err}


@durable.workflow("telemetry.waiter")
async def waiter(ctx: durable.Context, depth: int) -> str:
    if depth > 0:
        try:
            return await ctx.child(waiter, depth - 1)
        except ChildCancelledError:
            return "child cancelled"
    return await ctx.wait_signal("go")


@durable.workflow("telemetry.shaky")
async def shaky(ctx: durable.Context, tag: str) -> str:
    _attempts["wf:" + tag] += 1
    if _attempts["wf:" + tag] == 1:
        raise ConnectionError("first run attempt fails")
    return "steady"


@durable.workflow("telemetry.retrying")
async def retrying(ctx: durable.Context, tag: str) -> str:
    return await ctx.child(shaky, tag, retry=durable.RetryPolicy(initial_interval=0.0, max_attempts=2))


@durable.workflow("telemetry.renew")
async def renew(ctx: durable.Context, n: int) -> int:
    if n > 0:
        ctx.continue_as_new(n - 1)
    return await ctx.step(double, 21)


# --- helpers --------------------------------------------------------------------------------


def _scrape_sync(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    return await asyncio.to_thread(_scrape_sync, url)  # the server thread may query the database


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def parse_catalog(doc: str) -> dict[str, tuple[set[str], set[str]]]:
    """The event table in durable.hooks' docstring: name -> (required, optional) fields."""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+\s+=+", line.strip())]
    assert len(rules) == 2, "the catalog is one simple reST table"
    table = "\n".join(lines[rules[0] + 1:rules[1]])
    rows: dict[str, str] = {}
    current = None
    for line in table.splitlines():
        m = re.match(r"``([a-z.]+)``\s+(.*)", line)
        if m:
            current = m.group(1)
            rows[current] = m.group(2)
        elif current and line.strip():
            rows[current] += " " + line.strip()
    catalog = {}
    for name, text in rows.items():
        text = re.sub(r"\([^)]*\)", "", text)       # drop (explanations)
        text = re.split(r"\.(\s|$)", text)[0]       # fields end at the first sentence end
        required, optional = set(), set()
        for token in (t.strip() for t in text.split(",")):
            if token.startswith("[") and token.endswith("]"):
                optional.add(token[1:-1])
            else:
                assert re.fullmatch(r"[a-z_]+", token), f"catalog row {name!r}: bad field {token!r}"
                required.add(token)
        catalog[name] = (required, optional)
    return catalog


class Recorder:
    def __init__(self) -> None:
        self.events: list[hooks.HookEvent] = []

    def __call__(self, event: hooks.HookEvent) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[hooks.HookEvent]:
        return [e for e in self.events if e.name == name]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    detach = hooks.on("*", rec)
    yield rec
    detach()


# --- (a) fan-out counters over HTTP -----------------------------------------------------------


async def test_fanout_metrics_over_http(engine: durable.Engine) -> None:
    assert metrics.installed()  # Engine.open() installed the metrics handler (metrics=True)
    server = engine.start_metrics_server(port=0)
    assert server.port > 0 and server.url.endswith("/metrics")
    before = await scrape(server.url)

    handle = await engine.start(fanout, N)
    assert await handle.result(timeout=60) == sum(2 * i for i in range(N))

    after = await scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("durable_children_started_total", workflow="telemetry.leaf") == N
    assert delta("durable_children_finished_total", workflow="telemetry.leaf", outcome="completed") == N
    assert delta("durable_children_finished_total", workflow="telemetry.leaf", outcome="failed") == 0
    # one wake-latency observation per child outcome the parent received, however the
    # wakes coalesced; labelled by the waiting parent's workflow
    assert delta("durable_wake_latency_seconds_count", workflow="telemetry.fanout") == N
    assert 0 <= delta("durable_wake_latency_seconds_sum", workflow="telemetry.fanout") < N * 60
    assert delta("durable_wake_latency_seconds_bucket", workflow="telemetry.fanout", le="+Inf") == N
    # children are runs too; the parent completed once
    assert delta("durable_runs_started_total", workflow="telemetry.leaf", queue="default") == N
    assert delta("durable_runs_finished_total", workflow="telemetry.fanout", queue="default",
                 outcome="completed") == 1
    assert delta("durable_steps_total", workflow="telemetry.leaf", step="double", outcome="completed") == N
    # the queue collector reads this engine's schema at scrape time: a run due in an hour waits
    later = await engine.start(leaf, 1, queue="telemetry_q",
                               start_at=datetime.now(timezone.utc) + timedelta(hours=1))
    queues = await scrape(server.url)
    assert sample(queues, "durable_runs_waiting", queue="telemetry_q") == 1
    assert sample(queues, "durable_queue_depth", queue="telemetry_q") == 0
    await engine.cancel(later.run_id)
    # executing runs return to where they were (the parked parent never counted while waiting)

    async def idle() -> bool:
        return metrics.REGISTRY.get_sample_value("durable_runs_in_flight") == sample(
            before, "durable_runs_in_flight")

    await eventually(idle, 10, what="no run in flight")
    assert not any("run_id" in dict(labels) for _, labels in after)


async def test_metrics_server_lifecycle(db: Any) -> None:
    async with durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2) as e:
        with pytest.raises(ConfigurationError):
            e.start_metrics_server(port=70000)
        assert e._queue_collector is None  # a failed start leaves nothing registered
        server = e.start_metrics_server(port=0)
        second = e.start_metrics_server(port=0)  # same engine: one queue collector, two servers
        assert (await scrape(second.url)).keys() >= {("durable_heartbeats_total", frozenset())}
        names = {f.name for f in metrics.REGISTRY.collect()}
        assert "durable_queue_depth" in names
        port = server.port
        async with durable.Engine(db.dsn, schema=db.schema, execute=False) as other:
            with pytest.raises(ConfigurationError, match="queue_metrics=False"):
                other.start_metrics_server(port=0)  # one queue collector per registry
            third = other.start_metrics_server(port=0, queue_metrics=False)
            assert sample(await scrape(third.url), "durable_queue_depth", queue="default") == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(third.url, timeout=2)  # closing `other` stopped its server
    # close() stopped both servers and unregistered the collector
    assert "durable_queue_depth" not in {f.name for f in metrics.REGISTRY.collect()}
    for s in (server, second):
        with pytest.raises(OSError):
            urllib.request.urlopen(s.url, timeout=2)
    metrics.start_metrics_server("127.0.0.1", port).stop()  # the port was released
    with pytest.raises(ConfigurationError):
        e.start_metrics_server()  # closed: refused


async def test_metrics_setting_off(db: Any) -> None:
    metrics.uninstall()
    try:
        async with durable.Engine(db.dsn, schema=db.schema, metrics=False, poll_interval_s=0.2) as e:
            assert not metrics.installed()
            assert await e.run(leaf, 4, timeout=30) == 8
        with pytest.raises(ConfigurationError):
            durable.Engine(db.dsn, schema=db.schema, metrics="sometimes")
    finally:
        metrics.install()


# --- (b) the catalog and raising hooks ---------------------------------------------------------


async def test_emitted_events_match_the_catalog(engine: durable.Engine, recorder: Recorder) -> None:
    catalog = parse_catalog(hooks.__doc__ or "")
    assert len(catalog) >= 24 and "cascade.truncated" in catalog
    for name, handler in metrics._DISPATCH.items():  # the metrics handler knows only catalog events
        assert name in catalog, name

    assert (await engine.run(hooked, "cat", timeout=60))["err"] == "ChildFailedError"
    assert await engine.run(renew, 1, timeout=30) == 42
    assert await engine.run(retrying, "cat", timeout=30) == "steady"
    parent = await engine.start(waiter, 1)
    await eventually(lambda: _suspended_child(engine, recorder, parent.run_id), 30, what="the child to wait")
    child_id = recorder.named("child.started")[-1]["child_run_id"]
    assert await engine.cancel(child_id) == 1
    assert await parent.result(timeout=30) == "child cancelled"

    seen = {e.name for e in recorder.events}
    assert {"run.started", "run.completed", "run.failed", "run.cancelled", "run.continued", "run.resumed",
            "run.suspended", "execution.started", "execution.ended", "step.completed", "step.retried",
            "step.failed", "child.started", "child.completed", "child.failed", "child.cancelled",
            "cascade.completed", "claim.batch"} <= seen
    for event in recorder.events:
        assert event.name in catalog, f"event {event.name!r} is not in the hooks catalog"
        required, optional = catalog[event.name]
        keys = set(event.fields)
        assert required <= keys, f"{event.name}: missing {required - keys}"
        assert keys <= required | optional, f"{event.name}: undocumented {keys - required - optional}"
    for event in recorder.events:
        if event.name.startswith("child.") and event.name != "child.started":
            assert event["wake_latency_s"] is not None and 0 <= event["wake_latency_s"] < 60
    started = {e["run_id"] for e in recorder.named("run.started")}
    assert {e["child_run_id"] for e in recorder.named("child.started")} <= started
    cont, retried = recorder.named("run.continued")
    assert cont["successor_run_id"] in started and cont["duration_s"] >= 0
    assert (retried["workflow"], retried["reason"], retried["error_type"]) == (
        "telemetry.shaky", "retry", "ConnectionError")
    assert retried["successor_run_id"] in started
    cancelled = recorder.named("run.cancelled")
    assert [(e["run_id"], e["workflow"], e["reason"]) for e in cancelled] == [
        (child_id, "telemetry.waiter", "cancelled")]


async def _suspended_child(engine: durable.Engine, recorder: Recorder, parent_id: uuid.UUID) -> bool:
    kids = [e["child_run_id"] for e in recorder.named("child.started") if e["parent_run_id"] == parent_id]
    return bool(kids) and (await engine.get_handle(kids[-1]).status()) == "suspended"


async def test_raising_hooks_do_not_change_outcomes(engine: durable.Engine) -> None:
    baseline = await engine.run(hooked, "plain", timeout=60)
    with pytest.raises(RunFailedError) as plain_failure:
        await engine.run(failing, "plain", timeout=30)

    calls: dict[str, list[str]] = defaultdict(list)

    def raiser(pattern: str, exc: BaseException) -> Any:
        def handler(event: hooks.HookEvent) -> None:
            calls[pattern].append(event.name)
            raise exc
        return handler

    detachers = [hooks.on("run.*", raiser("run.*", RuntimeError("run hook broke"))),
                 hooks.on("step.*", raiser("step.*", KeyError("step hook broke"))),
                 hooks.on("child.*", raiser("child.*", asyncio.CancelledError())),
                 hooks.on("*", raiser("*", ZeroDivisionError()))]
    try:
        hooked_result = await engine.run(hooked, "raising", timeout=60)
        with pytest.raises(RunFailedError) as raising_failure:
            await engine.run(failing, "raising", timeout=30)
    finally:
        for detach in detachers:
            detach()

    assert hooked_result == {**baseline, "a": "raising:2"} and baseline["a"] == "plain:2"
    assert raising_failure.value.error["type"] == plain_failure.value.error["type"] == "StepError"
    assert {"run.started", "run.completed", "run.failed", "run.resumed"} <= set(calls["run.*"])
    assert {"step.completed", "step.retried", "step.failed"} <= set(calls["step.*"])
    assert {"child.started", "child.completed", "child.failed"} <= set(calls["child.*"])
    assert len(calls["*"]) >= len(calls["run.*"]) + len(calls["step.*"]) + len(calls["child.*"])


# --- (c) cascade truncated at the depth limit -----------------------------------------------------


async def test_cascade_truncated_is_emitted(engine: durable.Engine, db: Any, recorder: Recorder) -> None:
    truncated_before = metrics.REGISTRY.get_sample_value("durable_cascade_truncated_total") or 0.0
    cancelled_before = metrics.REGISTRY.get_sample_value("durable_cascade_cancelled_total") or 0.0
    root = await engine.start(waiter, 2)  # root -> child -> grandchild waiting for a signal

    async def grandchild_waits() -> bool:
        kids = recorder.named("child.started")
        return len(kids) == 2 and (await engine.get_handle(kids[1]["child_run_id"]).status()) == "suspended"

    await eventually(grandchild_waits, 30, what="the grandchild to wait")
    grandchild = recorder.named("child.started")[1]["child_run_id"]
    # a client whose depth limit is 1 cancels the root: the grandchild is below its reach
    async with durable.Engine(db.dsn, schema=db.schema, execute=False, max_child_depth=1) as client:
        assert await client.cancel(root.run_id) == 2
    (event,) = recorder.named("cascade.truncated")
    assert event.fields == {"run_id": root.run_id, "depth_limit": 1, "truncated": 1}
    assert recorder.named("cascade.completed")[0]["cancelled"] == 2
    assert metrics.REGISTRY.get_sample_value("durable_cascade_truncated_total") - truncated_before == 1
    assert metrics.REGISTRY.get_sample_value("durable_cascade_cancelled_total") - cancelled_before == 2
    assert await engine.get_handle(grandchild).status() == "suspended"
    await engine.cancel(grandchild)  # leave nothing waiting
