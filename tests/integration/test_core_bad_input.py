"""Bad input: each case is a typed error whose message says what to do, and nothing is
written to the database."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from psycopg import sql

import durable
from durable.config import EngineSettings
from durable.store.migrate import LATEST_VERSION
from durable.runtime.registry import unregister
from wf_core import (CALLS, Order, bad_result_flow, bad_step_flow, direct_step_call_flow, echo_flow, flaky,
                     no_input_flow, typed_flow, wait_go_flow)
from helpers import count, events


async def _nothing_written(db) -> None:
    conn = await db.conn()
    assert await count(conn, "durable_runs") == 0
    assert await count(conn, "durable_events") == 0
    assert await count(conn, "durable_signals") == 0


# --- registration ----------------------------------------------------------------------


async def test_unknown_workflow_name(engine, db):
    with pytest.raises(durable.WorkflowNotFoundError) as ei:
        await engine.start("core.no_such_workflow", 1)
    msg = str(ei.value)
    assert "core.no_such_workflow" in msg and "import the module" in msg
    assert "core.echo" in msg  # lists what is registered
    with pytest.raises(durable.WorkflowNotFoundError):
        await engine.start(lambda ctx: None)  # not a workflow at all
    await _nothing_written(db)


def test_workflow_registered_twice_with_other_version():
    async def v1(ctx: durable.Context, x: int) -> int:
        return x

    async def v2(ctx: durable.Context, x: int) -> int:
        return x + 1

    durable.workflow("core.twice", version=1)(v1)
    try:
        with pytest.raises(durable.RegistrationError) as ei:
            durable.workflow("core.twice", version=2)(v2)
        assert "versions 1 and 2" in str(ei.value) and "new name" in str(ei.value)
        with pytest.raises(durable.RegistrationError) as ei:
            durable.workflow("core.twice", version=1)(v2)  # same version, other code
        assert "different functions" in str(ei.value)
        # the first registration is untouched
        assert durable.runtime.registry.get_workflow("core.twice").fn is v1
        with pytest.raises(durable.RegistrationError):
            durable.workflow("core.sync")(lambda ctx: 1)  # not async
        with pytest.raises(durable.RegistrationError):
            durable.workflow("core.args")(lambda_three)
    finally:
        unregister("core.twice")


async def lambda_three(ctx, a, b):  # three parameters: not a workflow signature
    return a


# --- payloads --------------------------------------------------------------------------


async def test_input_not_serialisable_or_failing_its_model(engine, db):
    with pytest.raises(durable.PayloadError) as ei:
        await engine.start(echo_flow, {"when": object()})
    assert "not JSON-serialisable" in str(ei.value) and "nothing was written" in str(ei.value)
    with pytest.raises(durable.PayloadError):
        await engine.start(echo_flow, float("nan"))
    with pytest.raises(durable.PayloadError) as ei:
        await engine.start(typed_flow, {"id": "o1"})  # qty missing
    assert "does not match Order" in str(ei.value) and "qty" in str(ei.value)
    with pytest.raises(durable.PayloadError):
        await engine.start(typed_flow, Order.model_construct(id="o1", qty="many"))
    with pytest.raises(durable.PayloadError) as ei:
        await engine.start(no_input_flow, 1)
    assert "takes no input" in str(ei.value)
    await _nothing_written(db)


async def test_payload_over_limit(db):
    assert EngineSettings().payload_limit_bytes == 1024 * 1024
    async with durable.Engine(db.dsn, schema=db.schema) as e:  # the default limit
        with pytest.raises(durable.PayloadError) as ei:
            await e.start(echo_flow, "x" * (1024 * 1024))  # + 2 quote bytes
        assert "1048576" in str(ei.value) and "pass a reference" in str(ei.value)
    await _nothing_written(db)
    async with durable.Engine(db.dsn, schema=db.schema, payload_limit_bytes=2048) as e:
        with pytest.raises(durable.PayloadError) as ei:
            await e.start(echo_flow, "x" * 3000)
        assert "over the payload limit of 2048 bytes" in str(ei.value)
        await _nothing_written(db)
        h = await e.start(wait_go_flow, 1)
        with pytest.raises(durable.PayloadError):
            await h.signal("go", "x" * 3000)
        conn = await db.conn()
        assert await count(conn, "durable_signals") == 0
        await h.signal("go", 2)
        assert await h.result(timeout=20) == 3


async def test_bad_workflow_results_fail_the_run_and_store_no_result(db):
    async with durable.Engine(db.dsn, schema=db.schema, payload_limit_bytes=2048) as e:
        for kind, expect in (("unserialisable", "not JSON-serialisable"), ("big", "over the payload limit"),
                             ("wrong_type", "does not match int")):
            h = await e.start(bad_result_flow, kind)
            with pytest.raises(durable.RunFailedError) as ei:
                await h.result(timeout=20)
            assert ei.value.type == "PayloadError", kind
            assert expect in ei.value.message, (kind, ei.value.message)
            info = await h.info()
            assert info.status == "failed" and info.result is None


async def test_bad_step_results_are_step_errors_not_retried(db):
    async with durable.Engine(db.dsn, schema=db.schema, payload_limit_bytes=2048) as e:
        conn = await db.conn()
        for kind, expect in (("unserialisable", "not JSON-serialisable"), ("big", "over the payload limit")):
            before = CALLS["bad_step_result"]
            h = await e.start(bad_step_flow, kind)
            out = await h.result(timeout=20)
            assert out.startswith("PayloadError: ") and expect in out, out
            assert CALLS["bad_step_result"] == before + 1  # a payload error is not retried
            evs = await events(conn, h.run_id)
            assert [ev[2] for ev in evs] == ["step_failed"]
            assert evs[0][4]["error"]["type"] == "PayloadError"


async def test_a_step_called_directly_in_a_workflow_fails_the_run_and_never_runs(db):
    """``await my_step(x)`` inside a workflow would run the step unjournaled (again on every
    replay, without its retry policy): the run fails with StepCallError naming ctx.step, and
    the step's code did not run. Outside workflows a direct call is the plain function."""
    async with durable.Engine(db.dsn, schema=db.schema) as e:
        h = await e.start(direct_step_call_flow, "direct")
        with pytest.raises(durable.RunFailedError) as ei:
            await h.result(timeout=20)
        assert ei.value.type == "StepCallError"
        assert "await ctx.step(flaky, ...)" in ei.value.message
        assert CALLS["direct"] == 0
    assert await flaky("plain", 0, "ValueError") == 1  # unit-test use: the plain function


# --- database --------------------------------------------------------------------------


@pytest.mark.parametrize("dsn, needle", [
    ("postgresql://app:s3cr3tpw@localhost:99999/app", "port '99999'"),
    ("host=localhost port=abc dbname=app password=s3cr3tpw", "port 'abc'"),
    ("this is not a dsn password=s3cr3tpw", "expected a URI"),
    ("postgresql://app:s3cr3tpw@localhost/app?connect_timeout=soon", "connect_timeout"),
    ("   ", "empty"),
])
async def test_malformed_dsn(dsn, needle):
    e = durable.Engine(dsn)
    with pytest.raises(durable.ConfigurationError) as ei:
        await e.open()
    msg = str(ei.value)
    assert needle in msg, msg
    assert "s3cr3tpw" not in msg  # the password never shows
    if "connect_timeout" not in needle:
        assert "postgresql://user:pass@host:5432/dbname" in msg  # says what a good one looks like
    assert not e.opened


async def test_unreachable_database_fails_within_the_connect_timeout():
    # refused: nothing listens on the port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(durable.DatabaseUnavailableError) as ei:
        await durable.Engine(f"postgresql://postgres:pw9secret@127.0.0.1:{closed_port}/x",
                             connect_timeout_s=2).open()
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert f"port {closed_port}" in msg and "Check that the server is running" in msg
    assert "pw9secret" not in msg

    # silent: a server that accepts TCP but never answers must not hang the caller
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(durable.DatabaseUnavailableError) as ei:
            await asyncio.wait_for(durable.Engine(f"postgresql://postgres@127.0.0.1:{port}/x",
                                                  connect_timeout_s=1).open(), 30)
        waited = time.monotonic() - t0
        assert waited < 10, f"connect took {waited:.1f} s despite a 1 s timeout"
        assert "within the 1 s connect timeout" in str(ei.value)
        assert "connect_timeout_s" in str(ei.value)
    finally:
        silent.close()


async def test_schema_newer_than_the_code(db):
    conn = await db.conn()
    await conn.execute(sql.SQL("INSERT INTO {}.durable_migrations (version, name) VALUES (%s, 'future')")
                       .format(sql.Identifier(db.schema)), (LATEST_VERSION + 1,))
    for migrate in (True, False):
        e = durable.Engine(db.dsn, schema=db.schema, migrate=migrate)
        with pytest.raises(durable.SchemaVersionError) as ei:
            await e.open()
        msg = str(ei.value)
        assert f"at version {LATEST_VERSION + 1}" in msg and "upgrade durable" in msg
        assert not e.opened
    cur = await conn.execute(sql.SQL("SELECT max(version), count(*) FROM {}.durable_migrations")
                             .format(sql.Identifier(db.schema)))
    assert await cur.fetchone() == (LATEST_VERSION + 1, LATEST_VERSION + 1)
    await _nothing_written(db)


async def test_unmigrated_schema_without_migrate(fresh_schema):
    e = durable.Engine(fresh_schema.dsn, schema=fresh_schema.schema, migrate=False)
    with pytest.raises(durable.SchemaVersionError) as ei:
        await e.open()
    assert "durable migrate" in str(ei.value)


def test_bad_settings_are_configuration_errors():
    with pytest.raises(durable.ConfigurationError) as ei:
        durable.Engine("postgresql://x@localhost/db", payload_limit_bytes=10)
    assert "payload_limit_bytes" in str(ei.value)
    with pytest.raises(durable.ConfigurationError):
        durable.Engine("postgresql://x@localhost/db", schema="Bad-Schema")
    with pytest.raises(durable.ConfigurationError):
        durable.RetryPolicy(backoff=0.5)
