"""The core API against real PostgreSQL: idempotent starts, handles, typed payloads,
retry policies with durable waits, journaled step errors, replay and non-determinism."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import durable
from durable.runtime.registry import unregister
from durable.testing import TimeControl
from wf_core import CALLS, Flaky, Order, Receipt, echo_flow, flaky_flow, step_error_flow, typed_flow, wait_go_flow
from helpers import events, eventually


def _engine(db, **kw) -> durable.Engine:
    return durable.Engine(db.dsn, schema=db.schema, poll_interval_s=0.2, sticky_grace_s=0.2, **kw)


# --- starting, handles, results -----------------------------------------------------------


async def test_start_with_id_or_key_returns_the_same_run(engine, db):
    conn = await db.conn()
    rid = uuid.uuid4()
    h1 = await engine.start(echo_flow, "a", id=rid)
    h2 = await engine.start(echo_flow, "a", id=str(rid))
    assert h1.run_id == h2.run_id == rid
    assert await h2.result(timeout=20) == "a"
    h3 = await engine.start(echo_flow, "a", id=rid)  # after it finished: still the same run, not re-run
    assert h3.run_id == rid and await h3.result(timeout=5) == "a"
    cur = await conn.execute("SELECT count(*) FROM durable_runs WHERE id = %s", (rid,))
    assert (await cur.fetchone())[0] == 1

    # an idempotency key: racing starts with one input get one run; another input is a
    # conflict naming the key and the run (nothing written)
    hs = await asyncio.gather(*(engine.start(echo_flow, {"n": 7, "x": [1, 2]}, key="order-17") for _ in range(5)))
    assert len({h.run_id for h in hs}) == 1
    assert await hs[0].result(timeout=20) == {"n": 7, "x": [1, 2]}
    again = await engine.start(echo_flow, {"x": [1, 2.0], "n": 7}, key="order-17")  # same JSON, other order
    assert again.run_id == hs[0].run_id
    with pytest.raises(durable.RunConflictError) as conflict:
        await engine.start(echo_flow, 99, key="order-17")
    assert "'order-17'" in str(conflict.value) and str(hs[0].run_id) in str(conflict.value)
    assert "another key" in str(conflict.value)
    with pytest.raises(durable.RunConflictError):
        await engine.start(echo_flow, "b", id=rid)  # an explicit id with another input: the same
    cur = await conn.execute("SELECT count(*) FROM durable_runs WHERE idempotency_key = 'order-17'")
    assert (await cur.fetchone())[0] == 1

    # the id of another workflow's run is a conflict, and nothing is written
    with pytest.raises(durable.RunConflictError) as ei:
        await engine.start(wait_go_flow, 1, id=rid)
    assert "choose another id" in str(ei.value)
    cur = await conn.execute("SELECT count(*), min(workflow) FROM durable_runs")
    assert await cur.fetchone() == (2, "core.echo")
    with pytest.raises(durable.ConfigurationError):
        await engine.start(echo_flow, 1, id="not-a-uuid")


async def test_handle_result_timeout_and_status(engine, db):
    h = await engine.start(wait_go_flow, 40)
    other = engine.get_handle(str(h.run_id))  # a handle from an id alone
    with pytest.raises(durable.RunTimeoutError) as ei:
        await other.result(timeout=0.3)
    assert isinstance(ei.value, TimeoutError) and "keeps running" in str(ei.value)
    await eventually(lambda: _status_is(other, "suspended"), what="the run to suspend")
    info = await other.info()
    assert info.workflow == "core.wait_go" and info.input == 40 and info.lease_expires_at is None
    await other.signal("go", 2)
    assert await other.result(timeout=20) == 42
    assert await h.status() == "completed"
    assert (await h.info()).result == 42
    with pytest.raises(durable.RunNotFoundError):
        await engine.get_handle(uuid.uuid4()).status()
    with pytest.raises(durable.ConfigurationError):
        engine.get_handle("nope")
    # a client that does not execute runs waits for results the same way
    async with _engine(db, execute=False) as client:
        h2 = await engine.start(wait_go_flow, 1)
        waiting = asyncio.ensure_future(client.get_handle(h2.run_id).result(timeout=20))
        await asyncio.sleep(0.2)
        await client.signal(h2.run_id, "go", 1)
        assert await waiting == 2


async def _status_is(handle, status):
    return await handle.status() == status


async def test_typed_and_plain_payloads(engine, db):
    r = await (await engine.start(typed_flow, Order(id="o1", qty=4))).result(timeout=20)
    assert isinstance(r, Receipt) and r == Receipt(order_id="o1", total=10.0)
    r = await (await engine.start(typed_flow, {"id": "o2", "qty": "2"})).result(timeout=20)  # coerced
    assert r == Receipt(order_id="o2", total=5.0)
    conn = await db.conn()
    cur = await conn.execute("SELECT input, result FROM durable_runs WHERE workflow = 'core.typed' ORDER BY created_at")
    assert await cur.fetchall() == [({"id": "o1", "qty": 4}, {"order_id": "o1", "total": 10.0}),
                                    ({"id": "o2", "qty": "2"}, {"order_id": "o2", "total": 5.0})]
    for value in ({"a": [1, 2, {"b": None}]}, [1, "two", 3.5, True], "plain", 7, None):
        assert await engine.run(echo_flow, value, timeout=20) == value


# --- retries --------------------------------------------------------------------------------


async def _retry_events(db, run_id):
    conn = await db.conn()
    cur = await conn.execute(
        "SELECT kind, data, extract(epoch FROM created_at)::float8 FROM durable_events WHERE run_id = %s ORDER BY seq",
        (run_id,))
    return await cur.fetchall()


async def test_retry_policy_backoff_and_max_interval(engine, db):
    tag = f"retry-{uuid.uuid4().hex[:6]}"
    spec = Flaky(tag=tag, fail=3, initial=0.05, backoff=2.0, max_interval=0.08, max_attempts=5)
    h = await engine.start(flaky_flow, spec)
    assert await h.result(timeout=30) == 4
    assert CALLS[tag] == 4
    evs = await _retry_events(db, h.run_id)
    assert [(k, d["attempt"]) for k, d, _ in evs] == [("step_retry", 1), ("step_retry", 2), ("step_retry", 3),
                                                       ("step_completed", 4)]
    delays = [d["fire_at"] - created for k, d, created in evs if k == "step_retry"]
    assert delays == pytest.approx([0.05, 0.08, 0.08], abs=1e-3)  # 0.05, 0.1 -> max 0.08, 0.2 -> 0.08
    assert all(d["error"]["type"] == "ValueError" for k, d, _ in evs[:3])


async def test_retry_gives_up_after_max_attempts(engine, db):
    tag = f"always-{uuid.uuid4().hex[:6]}"
    h = await engine.start(flaky_flow, Flaky(tag=tag, fail=100, initial=0.01, max_attempts=3))
    with pytest.raises(durable.RunFailedError) as ei:
        await h.result(timeout=30)
    assert ei.value.type == "StepError" and "after 3 attempt(s)" in ei.value.message
    assert CALLS[tag] == 3
    evs = await _retry_events(db, h.run_id)
    assert [(k, d["attempt"]) for k, d, _ in evs] == [("step_retry", 1), ("step_retry", 2), ("step_failed", 3)]


@pytest.mark.parametrize("exc, non_retryable", [("key", ["KeyError"]), ("value", ["ValueError"]), ("app", [])])
async def test_non_retryable_errors_fail_at_once(engine, db, exc, non_retryable):
    tag = f"nr-{exc}-{uuid.uuid4().hex[:6]}"
    h = await engine.start(flaky_flow, Flaky(tag=tag, fail=100, exc=exc, max_attempts=5, non_retryable=non_retryable))
    with pytest.raises(durable.RunFailedError):
        await h.result(timeout=30)
    assert CALLS[tag] == 1
    evs = await _retry_events(db, h.run_id)
    assert [k for k, _, _ in evs] == ["step_failed"]
    assert evs[0][1]["error"]["type"] == {"key": "KeyError", "value": "ValueError", "app": "Broken"}[exc]


async def test_retry_wait_is_durable_not_in_memory(db):
    """A 10-minute retry wait: the run suspends (no lease), the engine goes away, and a new
    engine resumes the retry from the journal once the database clock passes the fire time."""
    tag = f"durable-{uuid.uuid4().hex[:6]}"
    spec = Flaky(tag=tag, fail=1, initial=600, max_interval=600, max_attempts=3)
    async with _engine(db) as e1:
        h = await e1.start(flaky_flow, spec)
        await eventually(lambda: _status_is(h, "suspended"), what="the run to suspend in its retry wait")
        info = await h.info()
        assert info.lease_expires_at is None
        evs = await _retry_events(db, h.run_id)
        assert [k for k, _, _ in evs] == ["step_retry"]
        assert info.next_wakeup_at.timestamp() == pytest.approx(evs[0][1]["fire_at"], abs=1e-3)
    assert CALLS[tag] == 1
    async with _engine(db) as e2:
        await asyncio.sleep(0.3)
        assert await e2.get_handle(h.run_id).status() == "suspended"  # not due yet: nothing runs
        assert CALLS[tag] == 1
        async with TimeControl(e2) as clock:
            await clock.advance(601)
            assert await e2.get_handle(h.run_id).result(timeout=20) == 2
    assert CALLS[tag] == 2
    evs = await _retry_events(db, h.run_id)
    assert [(k, d["attempt"]) for k, d, _ in evs] == [("step_retry", 1), ("step_completed", 2)]


# --- journaled step errors and replay ------------------------------------------------------


async def test_step_error_is_journaled_and_replay_raises_the_same(db):
    tag = f"boom-{uuid.uuid4().hex[:6]}"
    async with _engine(db) as e1:
        h = await e1.start(step_error_flow, tag)
        await eventually(lambda: _status_is(h, "suspended"), what="the run to wait for its signal")
    assert CALLS[tag] == 1
    async with _engine(db) as e2:  # a cold replay in a new engine
        replays: list = []
        detach = durable.hooks.on("run.resumed", lambda ev: replays.append(ev["source"]))
        try:
            await e2.signal(h.run_id, "go")
            out = await e2.get_handle(h.run_id).result(timeout=20)
        finally:
            detach()
    assert replays  # e2 executed it
    assert CALLS[tag] == 1  # the failed step did not run again
    assert out == {"type": "Boom", "message": f"boom {tag}", "attempts": 1, "step": "core.boom",
                   "details": {"tag": tag}}


async def _replay_against(db, name: str, v1, v2) -> tuple[durable.RunHandle, durable.RunFailedError]:
    """Run ``v1`` until it waits for the signal 'go', then register ``v2`` under the same
    name and version, resume the run from its journal, and return the failure it ends with."""
    durable.workflow(name)(v1)
    try:
        async with _engine(db) as e1:
            h = await e1.start(name)
            await eventually(lambda: _status_is(h, "suspended"), what="the run to suspend")
        unregister(name)
        durable.workflow(name)(v2)
        async with _engine(db) as e2:
            await e2.signal(h.run_id, "go")
            with pytest.raises(durable.RunFailedError) as ei:
                await e2.get_handle(h.run_id).result(timeout=20)
    finally:
        unregister(name)
    return h, ei.value


async def test_replay_against_changed_code_is_a_nondeterminism_error(db):
    @durable.step("core.nd.a")
    async def step_a() -> int:
        return 1

    @durable.step("core.nd.x")
    async def step_x() -> int:
        return 2

    async def v1(ctx: durable.Context) -> int:
        n = await ctx.step(step_a)
        await ctx.wait_signal("go")
        return n

    async def v2(ctx: durable.Context) -> int:  # same name and version, another first step
        n = await ctx.step(step_x)
        await ctx.wait_signal("go")
        return n

    h, err = await _replay_against(db, "core.nd", v1, v2)
    assert err.type == "NonDeterminismError"
    msg = err.message
    assert str(h.run_id) in msg and "operation 0" in msg
    assert "step_completed 'core.nd.a'" in msg and "step 'core.nd.x'" in msg
    conn = await db.conn()
    assert [e[3] for e in await events(conn, h.run_id)] == ["core.nd.a"]  # nothing of v2 was journaled


async def test_replay_of_a_shorter_workflow_is_a_nondeterminism_error(db):
    @durable.step("core.nd2.a")
    async def step_a() -> int:
        return 1

    async def v1(ctx: durable.Context) -> int:
        await ctx.step(step_a)
        await ctx.wait_signal("go")
        return 1

    async def v2(ctx: durable.Context) -> int:  # dropped the step: the history has more
        return 0

    _, err = await _replay_against(db, "core.nd2", v1, v2)
    assert err.type == "NonDeterminismError"
    assert "step_completed 'core.nd2.a'" in err.message and "the workflow returning" in err.message


async def test_a_caught_nondeterminism_error_still_fails_the_run(db):
    @durable.step("core.nd3.a")
    async def step_a() -> int:
        return 1

    @durable.step("core.nd3.x")
    async def step_x() -> int:
        return 2

    async def v1(ctx: durable.Context) -> int:
        await ctx.step(step_a)
        await ctx.wait_signal("go")
        return 1

    async def v2(ctx: durable.Context) -> int:  # swallows the mismatch and carries on
        try:
            await ctx.step(step_x)
        except durable.DurableError:
            pass
        return 99

    _, err = await _replay_against(db, "core.nd3", v1, v2)
    assert err.type == "NonDeterminismError"
    assert "step 'core.nd3.x'" in err.message
