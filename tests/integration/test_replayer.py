"""durable.testing.Replayer: stored histories (read from the database, or exported with
`durable export RUN > run.json`) replayed offline against the code of now. A change
guarded by ctx.patched passes; the same change unguarded is reported at its first
divergence (position, expected, got) or raised as the NonDeterminismError naming
ctx.patched; replaying runs no step and writes nothing; typed errors for another
workflow's history and for malformed documents."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable
import wf_patching as W
from durable.cli import commands as cli
from durable.runtime.registry import unregister
from durable.testing import Replayer, ReplayResult, RunHistory
from helpers import count, eventually, new_engine


@pytest.fixture(autouse=True)
def old_code() -> Iterator[None]:
    W.CODE["mode"] = "old"
    W.CALLS.clear()
    yield
    W.CODE["mode"] = "old"


async def recorded(db, job, workflow=W.order, mode: str = "old", wait: bool = False) -> uuid.UUID:
    """A run recorded by ``mode``'s code: suspended at its signal wait with ``wait`` (the
    engine closed then), else completed."""
    W.CODE["mode"] = mode
    async with new_engine(db) as engine:
        h = await engine.start(workflow, job)
        if wait:
            async def waiting() -> bool:
                return await h.status() == "suspended"
            await eventually(waiting, what="the run to wait for its signal")
        else:
            await h.result(timeout=20)
    W.CALLS.clear()
    return h.run_id


async def export(db, run_id: uuid.UUID, path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, "export", str(run_id)],
                                   stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    path.write_text(out.getvalue())


async def test_replayer_passes_the_guarded_change_and_reports_the_unguarded(db, tmp_path):
    run = await recorded(db, {"n": 1, "wait": True}, wait=True)
    history = await Replayer.history_from_db(db.dsn, run, schema=db.schema)
    assert (history.workflow, history.version, history.input) == ("patching.order", 1, {"n": 1, "wait": True})
    assert [(e.key, e.kind, e.name) for e in history.events] == [(0, "step_completed", "patching.a"),
                                                                  (1, "step_completed", "patching.old_b")]
    path = tmp_path / "run.json"
    await export(db, run, path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "durable.history" and doc["format_version"] == 1 and doc["run_id"] == str(run)
    events_before = await count(db, "durable_events")

    replayer = Replayer(workflows=[W.order])
    for source in (history, path, str(path), RunHistory.from_file(path)):
        W.CODE["mode"] = "patched"
        result = await replayer.replay(source)
        assert isinstance(result, ReplayResult) and result.ok and result.divergence is None
        assert result.outcome == "waiting"  # the history ends at the signal wait

        W.CODE["mode"] = "unguarded"
        result = await replayer.replay(source, raise_on_divergence=False)
        assert not result.ok and result.outcome == "failed"
        d = result.divergence
        assert d is not None and d.position == 1
        assert d.expected == "step_completed 'patching.old_b'" and d.got == "step 'patching.new_b'"
        assert "ctx.patched" in d.message
        with pytest.raises(durable.NonDeterminismError) as ei:
            await replayer.replay(source)
        assert ei.value.position == 1 and "ctx.patched" in str(ei.value)
    assert W.CALLS == []  # replays run no step
    assert await count(db, "durable_events") == events_before  # and write nothing


async def test_replayer_replays_completed_runs_and_markers(db, engine):
    done_old = await recorded(db, {"n": 1}, mode="old")
    done_new = await recorded(db, {"n": 2}, mode="patched")
    branches_new = await recorded(db, False, workflow=W.branches, mode="patched")
    histories = await Replayer.histories_from_db(engine, [done_old, done_new, branches_new])
    replayer = Replayer()  # every workflow registered here

    W.CODE["mode"] = "patched"
    report = await replayer.replay_many(histories)
    assert report.ok and [r.outcome for r in report.results] == ["completed"] * 3
    # the code after `deprecate_patch` replays the run recorded with the marker, not the old one
    W.CODE["mode"] = "deprecated"
    report = await replayer.replay_many(histories[:2])
    assert [r.ok for r in report.results] == [False, True]
    assert report.failures[0].run_id == done_old
    with pytest.raises(durable.NonDeterminismError):
        report.raise_for_divergence()
    # the unguarded code: the run recorded with a marker diverges at the marker
    W.CODE["mode"] = "unguarded"
    result = await replayer.replay(histories[1], raise_on_divergence=False)
    assert result.divergence is not None and result.divergence.expected == "patch 'new-b'"
    assert "ctx.deprecate_patch('new-b')" in result.divergence.message
    assert W.CALLS == []


async def test_a_workflow_that_returns_early_diverges(db):
    run = await recorded(db, {"n": 1}, mode="old")
    history = await Replayer.history_from_db(db.dsn, run, schema=db.schema)

    @durable.workflow("patching.order", version=7)
    async def shorter(ctx: durable.Context, job: dict) -> dict:
        return {"a": await ctx.step(W.step_a, job["n"])}

    try:
        doc = history.to_doc()
        doc["version"] = 7
        result = await Replayer(workflows=[shorter]).replay(doc, raise_on_divergence=False)
        assert result.divergence is not None and result.divergence.position == 1
        assert result.divergence.got == "the workflow returning"
    finally:
        unregister("patching.order", 7)


async def test_replaying_another_workflows_history_is_a_typed_error(db):
    run = await recorded(db, {"n": 1}, mode="old")
    history = await Replayer.history_from_db(db.dsn, run, schema=db.schema)
    with pytest.raises(durable.ReplayError) as ei:
        await Replayer(workflows=[W.branches]).replay(history)
    assert "'patching.order' version 1" in str(ei.value) and "Replayer(workflows=[...])" in str(ei.value)
    doc = history.to_doc()
    doc["version"] = 2
    with pytest.raises(durable.ReplayError) as ei:
        await Replayer(workflows=[W.order]).replay(doc)
    assert "version 2" in str(ei.value) and "it has version(s) 1" in str(ei.value)


async def test_bad_histories_and_arguments_are_typed_errors(db, tmp_path):
    replayer = Replayer(workflows=[W.order])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(durable.ReplayError, match="not JSON"):
        await replayer.replay(bad)
    with pytest.raises(durable.ReplayError, match="cannot read"):
        await replayer.replay(tmp_path / "missing.json")
    with pytest.raises(durable.ReplayError, match="format"):
        await replayer.replay({"workflow": "patching.order"})
    doc = {"format": "durable.history", "format_version": 1, "run_id": str(uuid.uuid4()),
           "workflow": "patching.order", "version": 1, "input": {"n": 1}, "events": [{"seq": "x"}]}
    with pytest.raises(durable.ReplayError, match="event 0"):
        await replayer.replay(doc)
    with pytest.raises(durable.ConfigurationError):
        Replayer(workflows=[lambda ctx: None])  # type: ignore[list-item]
    with pytest.raises(durable.RunNotFoundError):
        await Replayer.history_from_db(db.dsn, uuid.uuid4(), schema=db.schema)
    with pytest.raises(durable.ConfigurationError):
        await Replayer.history_from_db(db.dsn, "not-a-uuid", schema=db.schema)


async def test_cli_export_of_an_unknown_run(db):
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, "export",
                                              str(uuid.uuid4())], stdout=out, stderr=err)
    assert code == 3 and "does not exist" in err.getvalue()


async def test_replayer_replays_children_from_the_history(db):
    run = await recorded(db, 1, workflow=W.parent, mode="old")
    history = await Replayer.history_from_db(db.dsn, run, schema=db.schema)
    assert [e.kind for e in history.events] == ["child_started", "child_completed"]
    replayer = Replayer(workflows=[W.parent])
    result = await replayer.replay(history)
    assert result.ok and result.outcome == "completed"  # the child's outcome came from the history
    W.CODE["mode"] = "unguarded"
    result = await replayer.replay(history, raise_on_divergence=False)
    assert result.divergence is not None and result.divergence.position == 0
    assert "a different input" in result.divergence.got and "ctx.patched" in result.divergence.message
