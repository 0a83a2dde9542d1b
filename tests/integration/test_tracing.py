"""OpenTelemetry tracing (``durable[otel]``, durable/observe/tracing.py) against real runs,
recorded by the OTel SDK's InMemorySpanExporter: a span per run execution, per step
attempt and per child start, with run_id / workflow / attempt attributes; error status on
failure; the workflow's own spans nested under its run's span; nothing when disabled; the
module imports (and the setting is refused with a fix) when opentelemetry is absent."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import durable
from durable.errors import RunFailedError
from durable.observe import tracing
from helpers import ROOT, new_engine

EXPORTER = InMemorySpanExporter()


def _provider() -> TracerProvider:
    """The global SDK provider (set once per process; reused if a test set one already)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    return provider


PROVIDER = _provider()
APP_TRACER = trace.get_tracer("tests.app")

# --- workflows -----------------------------------------------------------------------------


@durable.step
async def triple(x: int) -> int:
    return 3 * x


@durable.step("tracing.broken", retry=durable.RetryPolicy(max_attempts=1))
async def broken(x: int) -> int:
    raise KeyError(f"no item {x}")


@durable.workflow("tracing.leaf")
async def leaf(ctx: durable.Context, n: int) -> int:
    return await ctx.step(triple, n)


@durable.workflow("tracing.parent")
async def parent(ctx: durable.Context, n: int) -> int:
    with APP_TRACER.start_as_current_span("app.work"):  # the workflow's own span
        first = await ctx.step(triple, 1)
    refs = await ctx.start_children(leaf, list(range(n)))
    return first + sum(await ctx.gather(refs))


@durable.workflow("tracing.fails")
async def fails(ctx: durable.Context, n: int) -> int:
    return await ctx.step(broken, n)


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    tracing.uninstall()
    EXPORTER.clear()
    yield
    tracing.uninstall()
    EXPORTER.clear()


def spans_of(run_id: uuid.UUID, prefix: str) -> list[ReadableSpan]:
    return [s for s in EXPORTER.get_finished_spans()
            if s.name.startswith(prefix) and (s.attributes or {}).get("durable.run_id") == str(run_id)]


# --- tests ---------------------------------------------------------------------------------


async def test_spans_per_run_step_and_child(db: Any) -> None:
    async with new_engine(db, otel_tracing=True) as engine:
        assert tracing.installed()
        handle = await engine.start(parent, 3)
        assert await handle.result(timeout=30) == 3 + 3 * (0 + 1 + 2)
    run_id = handle.run_id
    [run] = spans_of(run_id, "durable.run ")
    attrs = run.attributes or {}
    assert run.name == "durable.run tracing.parent"
    assert attrs["durable.workflow"] == "tracing.parent" and attrs["durable.attempt"] == 1
    assert attrs["durable.first"] is True and attrs["durable.end_reason"] == "terminal"
    assert run.status.status_code != StatusCode.ERROR

    [step] = spans_of(run_id, "durable.step ")
    assert step.parent is not None and step.parent.span_id == run.context.span_id
    assert (step.attributes or {})["durable.attempt"] == 1
    assert (step.attributes or {})["durable.workflow"] == "tracing.parent"
    assert step.start_time is not None and run.start_time is not None and step.start_time >= run.start_time

    starts = spans_of(run_id, "durable.child.start ")
    assert len(starts) == 3
    children = {(s.attributes or {})["durable.child_run_id"] for s in starts}
    for s in starts:
        assert s.parent is not None and s.parent.span_id == run.context.span_id
        assert (s.attributes or {})["durable.workflow"] == "tracing.leaf"
    for child in children:  # each child's own execution span, naming its parent
        [child_run] = spans_of(uuid.UUID(child), "durable.run ")
        assert (child_run.attributes or {})["durable.parent_run_id"] == str(run_id)
        assert len(spans_of(uuid.UUID(child), "durable.step ")) == 1

    # the workflow's own span is a child of its run's span (the run span is current)
    [app] = [s for s in EXPORTER.get_finished_spans() if s.name == "app.work"]
    assert app.parent is not None and app.parent.span_id == run.context.span_id


async def test_failure_sets_error_status(db: Any) -> None:
    async with new_engine(db, otel_tracing=True) as engine:
        handle = await engine.start(fails, 7)
        with pytest.raises(RunFailedError):
            await handle.result(timeout=30)
    [run] = spans_of(handle.run_id, "durable.run ")
    assert run.status.status_code == StatusCode.ERROR
    assert (run.attributes or {}).get("durable.error_type")
    [step] = spans_of(handle.run_id, "durable.step ")
    assert step.status.status_code == StatusCode.ERROR
    assert (step.attributes or {})["durable.error_type"]


async def test_nothing_recorded_when_disabled(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with new_engine(db) as engine:  # otel_tracing defaults to off
        assert not engine.settings.otel_tracing and not tracing.installed()
        assert await engine.run(leaf, 2, timeout=30) == 6
    assert not [s for s in EXPORTER.get_finished_spans() if s.name.startswith("durable.")]
    monkeypatch.setenv("DURABLE_OTEL_TRACING", "1")  # the environment turns it on too
    assert durable.Engine(db.dsn, schema=db.schema).settings.otel_tracing is True
    assert durable.Engine(db.dsn, schema=db.schema, otel_tracing=False).settings.otel_tracing is False


def test_without_opentelemetry_installed() -> None:
    """The module imports with opentelemetry absent; enabling tracing then is a typed error."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the [otel] extra were not installed\n"
        "import durable\n"
        "from durable.observe import tracing\n"
        "assert tracing.AVAILABLE is False\n"
        "durable.Engine('postgresql://x@127.0.0.1/x')  # off: fine\n"
        "try:\n"
        "    durable.Engine('postgresql://x@127.0.0.1/x', otel_tracing=True)\n"
        "except durable.ConfigurationError as exc:\n"
        "    assert \"pip install 'durable[otel]'\" in str(exc), exc\n"
        "    print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused"
