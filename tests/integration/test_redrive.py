"""Re-driving runs: resume (in place, from the failure), restart (a new run, same input),
fork (a new run from the first N events of the history), their bad input, fencing and a
concurrent double resume. Real PostgreSQL, executors in this process.
(Resume after the workflow's module changed, in a worker process: test_redrive_procs.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import durable
from durable.store import events as store_events
from durable.store import runs as store_runs

from wf_redrive import BROKEN, CALLS, GATE, gated, parent, steps_flow, timed
from helpers import eventually, events, rows, status_of, tree_key


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    BROKEN.clear()


async def _failed(engine: durable.Engine, handle: durable.RunHandle) -> None:
    with pytest.raises(durable.RunFailedError):
        await handle.result(timeout=20)


async def test_resume_after_a_fixed_bug_does_not_repeat_completed_steps(engine, db):
    BROKEN.add("c")
    h = await engine.start(steps_flow, ["a", "b", "c", "d"])
    await _failed(engine, h)
    assert CALLS == {"a": 1, "b": 1, "c": 1}
    before = await events(db, h.run_id)

    BROKEN.clear()  # the bug is fixed
    seen: list[durable.hooks.HookEvent] = []
    detach = durable.hooks.on("run.redriven", seen.append)
    try:
        again = await engine.resume(h.run_id)
    finally:
        detach()
    assert [(e.fields["action"], e.fields["previous_status"]) for e in seen] == [("resume", "failed")]
    assert again.run_id == h.run_id
    assert await again.result(timeout=20) == ["a", "b", "c", "d"]
    assert CALLS == {"a": 1, "b": 1, "c": 2, "d": 1}  # a and b replayed from the journal

    history = await rows(db, "SELECT seq, kind, data FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)
    kinds = [k for _, k, _ in history]
    # the failed attempt is kept whole (its step_failed too), then the resume marker, then the new tail
    assert [(s, k) for s, k, _ in history[:len(before)]] == [(e[0], e[2]) for e in before]
    assert kinds == ["step_completed", "step_completed", "step_failed", "resumed", "step_completed",
                     "step_completed"]
    marker = next(d for _, k, d in history if k == "resumed")
    failed_seq = next(s for s, k, _ in history if k == "step_failed")
    assert marker["previous_status"] == "failed"
    assert marker["previous_error"]["type"] == "StepError"
    assert marker["superseded_from"] == failed_seq and marker["superseded"] == 1
    info = await engine.info(h.run_id)
    assert info.status == "completed" and info.error is None


async def test_resume_of_a_run_whose_child_failed_reruns_only_that_child(engine, db):
    BROKEN.add("k2")
    h = await engine.start(parent, {"prefix": "p-", "kids": ["k1", "k2", "k3"]})
    await _failed(engine, h)
    assert CALLS == {"p-first": 1, "k1": 1, "k2": 1, "k3": 1}
    kids = dict(await rows(db, "SELECT input #>> '{}', id FROM durable_runs WHERE parent_id = %s", h.run_id))

    BROKEN.clear()
    again = await engine.resume(h.run_id)
    assert await again.result(timeout=20) == ["p-first", "k1", "k2", "k3", "p-last"]
    assert CALLS == {"p-first": 1, "k1": 1, "k2": 2, "k3": 1, "p-last": 1}
    # the failed child became 'continued' into a new attempt (the retry mechanism)
    chain = await rows(db, "SELECT status, attempt, continued_to IS NOT NULL FROM durable_runs "
                           "WHERE chain_root_id = %s ORDER BY attempt", kids["k2"])
    assert [(s, a, c) for s, a, c in chain] == [("continued", 1, True), ("completed", 2, False)]
    for label in ("k1", "k3"):
        assert await rows(db, "SELECT count(*) FROM durable_runs WHERE chain_root_id = %s", kids[label]) == [(1,)]


async def test_resume_a_cancelled_tree_reruns_the_cancelled_children(engine, db):
    h = await engine.start(parent, {"prefix": "c-", "kids": ["s1", "s2"], "leaf": "redrive.sleepy_leaf"})

    async def waiting() -> bool:
        got = await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s AND status = 'suspended'",
                         h.run_id)
        return got == [(2,)]

    await eventually(waiting, what="both children waiting for their signal")
    await engine.cancel(h.run_id)
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=20)
    assert await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s AND status = 'cancelled'",
                      h.run_id) == [(2,)]

    again = await engine.resume(h.run_id)
    assert await status_of(db, h.run_id) in ("pending", "running", "suspended")
    new_kids: list[uuid.UUID] = []

    async def rerun() -> bool:
        new_kids[:] = [r[0] for r in await rows(
            db, "SELECT id FROM durable_runs WHERE parent_id = %s AND attempt = 2 AND status = 'suspended'",
            h.run_id)]
        return len(new_kids) == 2

    await eventually(rerun, what="the cancelled children re-run as new attempts")
    for kid in new_kids:
        await engine.signal(kid, "go")
    assert await again.result(timeout=20) == ["c-first", "s1", "s2", "c-last"]
    assert CALLS == {"c-first": 1, "s1": 1, "s2": 1, "c-last": 1}


async def test_resume_a_timed_out_run_gets_a_fresh_execution_timeout(engine, db):
    h = await engine.start(timed, "t", timeout=1.0)
    with pytest.raises(durable.RunFailedError) as failed:
        await h.result(timeout=20)
    assert failed.value.error["type"] == "WorkflowTimeoutError"
    again = await engine.resume(h.run_id)

    async def waiting() -> bool:
        return await status_of(db, h.run_id) == "suspended"

    await eventually(waiting, what="the resumed run waiting for its signal")
    await engine.signal(h.run_id, "go")
    assert await again.result(timeout=20) == "t-1,t-2"
    assert CALLS == {"t-1": 1, "t-2": 1}


async def test_fork_at_n_reruns_exactly_the_operations_after_n(engine, db):
    h = await engine.start(steps_flow, ["a", "b", "c", "d", "e"])
    assert await h.result(timeout=20) == ["a", "b", "c", "d", "e"]
    assert CALLS == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}
    history = await rows(db, "SELECT seq, kind, name FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)
    assert [k for _, k, _ in history] == ["step_completed"] * 5

    fork = await engine.fork(h.run_id, at=2)
    assert fork.run_id != h.run_id
    assert await fork.result(timeout=20) == ["a", "b", "c", "d", "e"]
    assert CALLS == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 2}  # exactly the operations after 2
    origin = await rows(db, "SELECT origin_id, origin_kind, origin_at, input FROM durable_runs WHERE id = %s",
                        fork.run_id)
    assert origin == [(h.run_id, "fork", 2, ["a", "b", "c", "d", "e"])]
    assert len(await events(db, fork.run_id)) == 5


async def test_fork_keeps_children_finished_in_the_prefix_and_reruns_the_rest(engine, db):
    h = await engine.start(parent, {"prefix": "f-", "kids": ["x1", "x2"]})
    assert await h.result(timeout=20) == ["f-first", "x1", "x2", "f-last"]
    history = await rows(db, "SELECT seq, kind FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)
    kinds = [k for _, k in history]
    # step, 2 child starts, 2 outcomes, step
    assert kinds[0] == "step_completed" and kinds[1:3] == ["child_started"] * 2
    first_outcome = kinds.index("child_completed") + 1  # its seq (seqs start at 1)
    CALLS.clear()

    fork = await engine.fork(h.run_id, at=first_outcome)  # x? finished within the prefix, the other not
    assert await fork.result(timeout=20) == ["f-first", "x1", "x2", "f-last"]
    assert sum(CALLS[k] for k in ("x1", "x2")) == 1 and CALLS["f-first"] == 0 and CALLS["f-last"] == 1
    kids = await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s", fork.run_id)
    assert kids == [(1,)]  # the unfinished child re-ran as a new child of the fork


async def test_restart_gives_a_new_run_with_the_same_input(engine, db):
    BROKEN.add("b")
    h = await engine.start(steps_flow, ["a", "b"])
    await _failed(engine, h)
    BROKEN.clear()
    new = await engine.restart(h.run_id)
    assert new.run_id != h.run_id
    assert await new.result(timeout=20) == ["a", "b"]
    assert CALLS == {"a": 2, "b": 2}
    assert await rows(db, "SELECT origin_id, origin_kind, input, workflow FROM durable_runs WHERE id = %s",
                      new.run_id) == [(h.run_id, "restart", ["a", "b"], "redrive.steps")]
    assert await status_of(db, h.run_id) == "failed"  # the original is left as it was


# --- bad input: typed errors, nothing written ---------------------------------------------------


async def _snapshot(db) -> list[tuple]:
    return await rows(db, "SELECT (SELECT count(*) FROM durable_runs), (SELECT count(*) FROM durable_events), "
                          "(SELECT count(*) FROM durable_due), "
                          "(SELECT coalesce(sum(lease_epoch), 0) FROM durable_runs)")


async def test_resume_of_a_completed_run_is_refused_naming_restart_and_fork(engine, db):
    h = await engine.start(steps_flow, ["a"])
    await h.result(timeout=20)
    before = await _snapshot(db)
    with pytest.raises(durable.RunNotResumableError) as err:
        await engine.resume(h.run_id)
    assert err.value.status == "completed"
    assert "completed" in str(err.value) and "restart" in str(err.value) and "fork" in str(err.value)
    assert await _snapshot(db) == before


async def test_resume_of_a_waiting_run_is_refused(engine, db):
    h = await engine.start(timed, "w")
    await eventually(lambda: status_of(db, h.run_id), what="started")

    async def waiting() -> bool:
        return await status_of(db, h.run_id) == "suspended"

    await eventually(waiting, what="waiting for its signal")
    before = await _snapshot(db)
    with pytest.raises(durable.RunNotResumableError) as err:
        await engine.resume(h.run_id)
    assert err.value.status == "suspended" and "cancel" in str(err.value)
    assert await _snapshot(db) == before
    await engine.cancel(h.run_id)


async def test_resume_of_a_child_names_the_root(engine, db):
    BROKEN.add("k1")
    h = await engine.start(parent, {"prefix": "r-", "kids": ["k1"]})
    await _failed(engine, h)
    (kid,) = [r[0] for r in await rows(db, "SELECT id FROM durable_runs WHERE parent_id = %s", h.run_id)]
    before = await _snapshot(db)
    with pytest.raises(durable.RunNotResumableError) as err:
        await engine.resume(kid)
    assert str(h.run_id) in str(err.value) and "root" in str(err.value)
    assert await _snapshot(db) == before


async def test_fork_past_the_history_names_its_length(engine, db):
    h = await engine.start(steps_flow, ["a", "b", "c"])
    await h.result(timeout=20)
    before = await _snapshot(db)
    with pytest.raises(durable.ForkPositionError) as err:
        await engine.fork(h.run_id, at=4)
    assert err.value.history_length == 3 and "3 events" in str(err.value) and "between 0 and 3" in str(err.value)
    with pytest.raises(durable.ForkPositionError):
        await engine.fork(h.run_id, at=-1)
    assert await _snapshot(db) == before


async def test_unknown_run_ids(engine, db):
    before = await _snapshot(db)
    for call in (engine.resume, engine.restart, lambda rid: engine.fork(rid, at=0)):
        with pytest.raises(durable.RunNotFoundError):
            await call(uuid.uuid4())
    with pytest.raises(durable.ConfigurationError):
        await engine.resume("not-a-uuid")
    assert await _snapshot(db) == before


# --- fencing and concurrency ----------------------------------------------------------------------


async def test_a_stale_executor_is_fenced_after_a_resume(engine, db):
    """An executor held the run (running, in a step) when it was cancelled; the run is
    resumed and runs again under a new holder. The old holder's lease epoch can neither
    append to the journal nor finish the run."""
    GATE["open"] = asyncio.Event()
    h = await engine.start(gated, "g")

    async def in_step(n: int) -> bool:
        return CALLS["g-2"] == n and await status_of(db, h.run_id) == "running"

    await eventually(lambda: in_step(1), what="the run in its gated step")
    (stale,) = (await rows(db, "SELECT lease_epoch FROM durable_runs WHERE id = %s", h.run_id))[0]
    await engine.cancel(h.run_id)
    await engine.resume(h.run_id)
    await eventually(lambda: in_step(2), what="the resumed run in its gated step again")
    (epoch,) = (await rows(db, "SELECT lease_epoch FROM durable_runs WHERE id = %s", h.run_id))[0]
    assert epoch >= stale + 2  # the resume's epoch, then the new claim's
    n_before = len(await events(db, h.run_id))
    conn = await db.conn()
    try:
        assert not await store_events.append_event(conn, tree_key(h.run_id), h.run_id, stale, n_before + 1, 99,
                                                   "step_completed", "stale", '{"attempt": 1, "result": "stale"}')
        assert await store_runs.finish(conn, tree_key(h.run_id), h.run_id, stale, "completed", '"stale"', None,
                                       10) == "lost"
        await conn.commit()
    finally:
        await conn.close()
    assert len(await events(db, h.run_id)) == n_before and await status_of(db, h.run_id) == "running"
    GATE["open"].set()
    assert await h.result(timeout=20) == ["g-1", "g-2"]
    assert CALLS["g-1"] == 1


async def test_a_run_resumed_twice_concurrently_resumes_once(db):
    from helpers import new_engine
    BROKEN.add("b")
    async with new_engine(db, execute=False) as client:
        async with new_engine(db) as worker:
            h = await worker.start(steps_flow, ["a", "b"])
            await _failed(worker, h)
        BROKEN.clear()
        results = await asyncio.gather(*(client.resume(h.run_id) for _ in range(4)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, durable.RunHandle)]
    refused = [r for r in results if isinstance(r, durable.RunNotResumableError)]
    assert len(ok) == 1 and len(refused) == 3, results
    assert all(r.status in ("suspended", "running", "completed") for r in refused), refused
    assert await rows(db, "SELECT count(*) FROM durable_events WHERE run_id = %s AND kind = 'resumed'",
                      h.run_id) == [(1,)]


# --- the CLI ----------------------------------------------------------------------------------------


async def _cli(db, *args: str, expect: int = 0) -> tuple[str, str]:
    import io
    from durable.cli import commands as cli
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, *args], stdout=out, stderr=err)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert code == expect, f"exit {code}, expected {expect}\nstdout: {out.getvalue()}\nstderr: {err.getvalue()}"
    return out.getvalue(), err.getvalue()


async def test_cli_resume_restart_fork_and_bulk_dry_run(engine, db):
    BROKEN.add("b")
    failed = [await engine.start(steps_flow, ["a", "b", label]) for label in ("x", "y")]
    for h in failed:
        await _failed(engine, h)
    ok = await engine.start(steps_flow, ["a"])
    await ok.result(timeout=20)
    BROKEN.clear()

    # bulk, dry run: lists the failed runs of the workflow glob, changes nothing
    out, _ = await _cli(db, "resume", "--status", "failed", "--workflow", "redrive.*", "--since", "1h",
                        "--dry-run", "--json")
    doc = json.loads(out)
    assert {uuid.UUID(r["run_id"]) for r in doc["runs"]} == {h.run_id for h in failed} and doc["dry_run"]
    assert [await status_of(db, h.run_id) for h in failed] == ["failed", "failed"]
    out, _ = await _cli(db, "resume", "--status", "failed", "--workflow", "other.*")
    assert "no runs match" in out

    # one run, then the rest in bulk
    out, _ = await _cli(db, "resume", str(failed[0].run_id))
    assert f"resumed run {failed[0].run_id}" in out
    assert await failed[0].result(timeout=20) == ["a", "b", "x"]
    out, _ = await _cli(db, "show", str(failed[0].run_id))
    superseded = [line for line in out.splitlines() if "(superseded)" in line]
    assert len(superseded) == 1 and "step_failed" in superseded[0]
    assert any("resumed" in line and "was failed" in line and "events 2..2 superseded" in line
               for line in out.splitlines()), out
    out, _ = await _cli(db, "resume", "--status", "failed", "--workflow", "redrive.steps")
    assert "resumed 1 run(s)" in out
    assert await failed[1].result(timeout=20) == ["a", "b", "y"]

    out, _ = await _cli(db, "restart", str(ok.run_id), "--json")
    new = uuid.UUID(json.loads(out)["new_run_id"])
    assert await engine.get_handle(new).result(timeout=20) == ["a"]
    out, _ = await _cli(db, "fork", str(ok.run_id), "--at", "1")
    assert f"forked run {ok.run_id} at 1 as run" in out
    forked = out.split(" as run ")[1].split()[0]
    out, _ = await _cli(db, "show", forked)
    assert f"fork of {ok.run_id} at 1" in out

    # bad input: usage errors naming the fix, nothing written
    _, err = await _cli(db, "resume", str(ok.run_id), expect=2)
    assert "completed" in err and "restart" in err
    _, err = await _cli(db, "fork", str(ok.run_id), "--at", "9", expect=2)
    assert "between 0 and 1" in err
    _, err = await _cli(db, "resume", expect=2)
    assert "--status" in err
    _, err = await _cli(db, "resume", "--status", "completed", expect=2)
    assert "choose from failed, cancelled" in err
    _, err = await _cli(db, "resume", str(uuid.uuid4()), expect=3)


@pytest.mark.postgres_only(reason="reads PostgreSQL's plan")
async def test_bulk_selection_is_an_index_scan_that_stops_at_its_limit(db):
    """50,000 finished top-level runs (666 of them failed runs of orders.*) and 50,000 children:
    the selection of a bulk re-drive is an ordered index scan of creation time that stops at
    its limit, not a sequential scan and sort."""
    from datetime import datetime, timezone
    from durable.store.statements import q
    from helpers import execute
    await execute(db, """
        INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, parent_id, workflow, version, queue, status,
                                  input, finished_at, created_at)
        SELECT durable_tree_key(g), g, g, g, CASE WHEN i %% 2 = 1 THEN g END,
               CASE WHEN i %% 3 = 0 THEN 'orders.pay' ELSE 'mail.send' END, 1, 'default',
               CASE WHEN i %% 50 = 0 THEN 'failed' ELSE 'completed' END, '{}',
               now() - interval '1 second' * i, now() - interval '1 second' * i
          FROM (SELECT gen_random_uuid() AS g, i FROM generate_series(1, 100000) i) s""")
    await execute(db, "ANALYZE durable_runs")
    stmt = (q("redrive_candidates").replace("%(since)s", "%s").replace("%(statuses)s", "%s")
            .replace("%(pattern)s", "%s").replace("%(limit)s", "%s"))
    plan = await rows(db, "EXPLAIN (ANALYZE, FORMAT JSON) " + stmt, datetime(2020, 1, 1, tzinfo=timezone.utc),
                      ["failed"], "orders.%", 20)
    text = json.dumps(plan[0][0])
    # an ordered scan of an index of creation time (the roots' or all runs'), stopping at the limit
    assert "durable_runs_roots_created_idx" in text or "durable_runs_created_idx" in text, text
    assert "Seq Scan" not in text and "Scan Direction\": \"Backward" in text, text
    assert plan[0][0][0]["Plan"]["Actual Rows"] == 20


async def test_a_run_resumed_twice_supersedes_both_failures(engine, db):
    """Fails, is resumed, fails again further on, is resumed again: each resume supersedes
    its own failure; the completed steps never run twice."""
    BROKEN.update({"b", "c"})
    h = await engine.start(steps_flow, ["a", "b", "c", "d"])
    await _failed(engine, h)
    BROKEN.discard("b")
    await _failed(engine, await engine.resume(h.run_id))
    BROKEN.clear()
    assert await (await engine.resume(h.run_id)).result(timeout=20) == ["a", "b", "c", "d"]
    assert CALLS == {"a": 1, "b": 2, "c": 2, "d": 1}
    history = await rows(db, "SELECT seq, kind, data->>'superseded_from' FROM durable_events WHERE run_id = %s "
                             "ORDER BY seq", h.run_id)
    assert [(s, k) for s, k, _ in history] == [
        (1, "step_completed"), (2, "step_failed"), (3, "resumed"), (4, "step_completed"), (5, "step_failed"),
        (6, "resumed"), (7, "step_completed"), (8, "step_completed")]
    assert [f for _, k, f in history if k == "resumed"] == ["2", "5"]
    # a fork of it copies the replayable history only (renumbered), and re-runs what follows
    CALLS.clear()
    fork = await engine.fork(h.run_id, at=7)
    assert await fork.result(timeout=20) == ["a", "b", "c", "d"]
    assert CALLS == {"d": 1}
    assert [r[2] for r in await events(db, fork.run_id)] == ["step_completed"] * 4
