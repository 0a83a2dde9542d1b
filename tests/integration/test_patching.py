"""ctx.patched / ctx.deprecate_patch: a workflow changed between a crash (the executing
engine closed mid-run) and its cold replay keeps the old path for the run recorded before
the change and takes the new path in new runs; the same change unguarded fails with the
NonDeterminismError that names ctx.patched; markers inside concurrent branches; bad change
ids are typed errors that journal nothing. (Across processes with SIGKILL:
tests/procs/test_patching_procs.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import durable
import wf_patching as W
from helpers import eventually, new_engine, rows


@pytest.fixture(autouse=True)
def old_code() -> Iterator[None]:
    W.CODE["mode"] = "old"
    W.CALLS.clear()
    yield
    W.CODE["mode"] = "old"


async def journal(db, run_id: uuid.UUID) -> list[tuple]:
    """(key, kind, name, data) of the run's events in seq order."""
    return [tuple(r) for r in await rows(
        db, "SELECT coalesce(op, pos::text), kind, name, data FROM durable_events WHERE run_id = %s ORDER BY seq",
        run_id)]


async def suspended_old_run(db, job: dict, workflow=W.order) -> uuid.UUID:
    """Start a run on the old code, let it reach its signal wait, and close the engine
    (grace 0: the in-memory coroutine is gone, the next execution is a cold replay)."""
    engine = new_engine(db)
    await engine.open()
    try:
        h = await engine.start(workflow, job)
        await eventually(lambda: h.status(), what="run to start")

        async def waiting() -> bool:
            return await h.status() == "suspended"
        await eventually(waiting, what="the run to wait for its signal")
    finally:
        await engine.close(grace=0)
    return h.run_id


async def test_patched_change_keeps_the_old_path_for_old_runs_and_takes_the_new_one(db):
    old_run = await suspended_old_run(db, {"n": 1, "wait": True})
    assert W.CALLS == ["a", "old_b"]
    W.CODE["mode"] = "patched"  # the deploy
    W.CALLS.clear()
    async with new_engine(db) as engine:
        await engine.signal(old_run, "go")
        assert await engine.result(old_run, timeout=20) == {"a": 2, "b": "old", "c": 3}
        assert W.CALLS == ["a"]  # only the last step ran: the rest replayed, old path included
        # no marker in the old run: its history was recorded before the change
        assert [(k, kind, name) for k, kind, name, _ in await journal(db, old_run)] == [
            ("0", "step_completed", "patching.a"), ("1", "step_completed", "patching.old_b"),
            ("2", "signal_received", "go"), ("3", "step_completed", "patching.a")]

        new = await engine.run(W.order, {"n": 5}, timeout=20)
        assert new == {"a": 6, "b": "new", "c": 7}
    [new_run] = [r[0] for r in await rows(db, "SELECT id FROM durable_runs WHERE id <> %s", old_run)]
    assert [(k, kind, name, data) for k, kind, name, data in await journal(db, new_run)] == [
        ("0", "step_completed", "patching.a", {"attempt": 1, "result": 6}),
        ("1", "patch", "new-b", {"deprecated": False}),
        ("2", "step_completed", "patching.new_b", {"attempt": 1, "result": "new"}),
        ("3", "step_completed", "patching.a", {"attempt": 1, "result": 7})]


async def test_a_run_recorded_with_the_marker_replays_the_new_path(db):
    W.CODE["mode"] = "patched"
    run = await suspended_old_run(db, {"n": 1, "wait": True})
    assert W.CALLS == ["a", "new_b"]
    W.CALLS.clear()
    async with new_engine(db) as engine:
        await engine.signal(run, "go")
        assert await engine.result(run, timeout=20) == {"a": 2, "b": "new", "c": 3}
    assert W.CALLS == ["a"]


async def test_the_same_change_unguarded_fails_naming_patched(db):
    old_run = await suspended_old_run(db, {"n": 1, "wait": True})
    W.CODE["mode"] = "unguarded"
    async with new_engine(db) as engine:
        await engine.signal(old_run, "go")
        with pytest.raises(durable.RunFailedError) as ei:
            await engine.result(old_run, timeout=20)
    assert ei.value.type == "NonDeterminismError"
    message = ei.value.message
    assert "operation 1" in message and "patching.old_b" in message and "patching.new_b" in message
    assert 'ctx.patched("change-id")' in message and "version" in message
    assert W.CALLS == ["a", "old_b"]  # new_b never ran for the old run


async def test_deprecate_patch_then_removal(db):
    W.CODE["mode"] = "patched"
    with_marker = await suspended_old_run(db, {"n": 1, "wait": True})
    # step 2: deprecate_patch consumes the marker of runs recorded with patched, and
    # journals a deprecated marker in new runs
    W.CODE["mode"] = "deprecated"
    deprecated_run = await suspended_old_run(db, {"n": 2, "wait": True})
    async with new_engine(db) as engine:
        await engine.signal(with_marker, "go")
        assert await engine.result(with_marker, timeout=20) == {"a": 2, "b": "new", "c": 3}
    assert [(k, kind, name, data) for k, kind, name, data in await journal(db, deprecated_run)][1] == (
        "1", "patch", "new-b", {"deprecated": True})
    # step 3: the deprecate_patch call deleted; its deprecated marker is stepped over
    W.CODE["mode"] = "patched"
    patched_run = await suspended_old_run(db, {"n": 3, "wait": True})  # (deleted too early for this one)
    W.CODE["mode"] = "removed"
    async with new_engine(db) as engine:
        await engine.signal(deprecated_run, "go")
        assert await engine.result(deprecated_run, timeout=20) == {"a": 3, "b": "new", "c": 4}
        # a (non-deprecated) patched marker the code no longer asks for is non-determinism,
        # and the error says to keep the call or deprecate it
        await engine.signal(patched_run, "go")
        with pytest.raises(durable.RunFailedError) as ei:
            await engine.result(patched_run, timeout=20)
    assert ei.value.type == "NonDeterminismError"
    assert "ctx.patched('new-b')" in ei.value.message and "ctx.deprecate_patch('new-b')" in ei.value.message


async def test_patched_inside_concurrent_branches(db):
    old_run = await suspended_old_run(db, True, workflow=W.branches)
    W.CODE["mode"] = "patched"
    async with new_engine(db) as engine:
        await engine.signal(old_run, "go")
        assert await engine.result(old_run, timeout=20) == [["old", "old"], ["old", "old"]]
        assert await engine.run(W.branches, False, timeout=20) == [["new", "new"], ["new", "new"]]
    [new_run] = [r[0] for r in await rows(db, "SELECT id FROM durable_runs WHERE id <> %s", old_run)]
    got = await journal(db, new_run)
    # one marker per branch (the loop's second call answers from memory), at the branch's first key
    assert sorted((k, name) for k, kind, name, _ in got if kind == "patch") == [("0:0", "branch-b"),
                                                                               ("1:0", "branch-b")]
    assert sorted(k for k, kind, _, _ in got if kind == "step_completed") == ["0:1", "0:2", "1:1", "1:2"]
    assert [kind for _, kind, _, _ in await journal(db, old_run)].count("patch") == 0


async def test_a_run_with_markers_in_branches_replays_cold(db):
    W.CODE["mode"] = "patched"
    run = await suspended_old_run(db, True, workflow=W.branches)
    W.CALLS.clear()
    async with new_engine(db) as engine:
        await engine.signal(run, "go")
        assert await engine.result(run, timeout=20) == [["new", "new"], ["new", "new"]]
    assert W.CALLS == []  # every step replayed


@pytest.mark.parametrize("what, problem", [("int", "got 123"), ("empty", "got ' '"),
                                           ("two", "asked at two places")])
async def test_bad_change_ids_are_typed_errors_that_journal_nothing(db, engine, what, problem):
    with pytest.raises(durable.RunFailedError) as ei:
        await engine.run(W.bad, what, timeout=20)
    assert ei.value.type == "PatchError"
    assert problem in ei.value.message and "Nothing was journaled" in ei.value.message
    [run] = [r[0] for r in await rows(db, "SELECT id FROM durable_runs")]
    markers = [(k, name) for k, kind, name, _ in await journal(db, run) if kind == "patch"]
    assert markers == ([("0", "dup")] if what == "two" else [])  # the first place's marker only


async def test_patched_outside_a_workflow_is_refused(db, engine):
    # a context's operations belong to its workflow's tasks: the engine's BranchError
    h = await engine.start(W.order, {"n": 1, "wait": True})
    await eventually(lambda: h.status(), what="run to start")
    ex = engine.runs.active.get(h.run_id) or engine.runs.parked.get(h.run_id)
    assert ex is not None
    with pytest.raises(durable.BranchError):
        ex.ctx.patched("new-b")
    await engine.cancel(h.run_id)
