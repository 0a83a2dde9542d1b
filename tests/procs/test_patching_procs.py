"""Code changed under running runs, across worker processes (tests/support/worker_proc.py):
a worker SIGKILLed in the middle of a run on the old code; a worker with the patched code
finishes that run on the old path and new runs on the new path; with the change unguarded
the run fails with the NonDeterminismError naming ctx.patched. A worker claims only the
workflow versions it registers: a v1 run waits until a worker with v1 starts."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

import durable
import wf_patching as W
import wf_versions as V1
from durable.runtime import registry
from helpers import events, eventually


@pytest.fixture(autouse=True)
def old_code() -> Iterator[None]:
    W.CODE["mode"] = "old"
    yield


async def killed_mid_step(db, worker_procs, client: durable.Engine, flag: str) -> tuple[durable.RunHandle, object]:
    """A run on the old code whose worker is SIGKILLed while its gate step is in flight."""
    a = worker_procs("wf_patching", "--lease-ttl", "2")
    h = await client.start(W.order, {"n": 1, "flag": flag})
    conn = await db.conn()
    try:
        async def at_gate():
            return [e[3] for e in await events(conn, h.run_id)] == ["patching.a", "patching.old_b"]
        await eventually(at_gate, what="the old worker to journal a and old_b")
        await asyncio.sleep(0.2)  # the gate step is in flight
    finally:
        await conn.close()
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    info = await h.info()
    assert info.status == "running" and info.lease_owner == a.owner  # died holding the lease
    return h, a


async def test_sigkilled_old_run_finishes_on_the_old_path_under_patched_code(db, worker_procs, tmp_path):
    flag = str(tmp_path / "go")
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        old, _ = await killed_mid_step(db, worker_procs, client, flag)
        open(flag, "w").close()
        worker_procs("wf_patching_new", "--lease-ttl", "2")  # the deploy: ctx.patched("new-b")
        assert await old.result(timeout=30) == {"a": 2, "b": "old", "c": 3}
        new = await client.start(W.order, {"n": 5})
        assert await new.result(timeout=30) == {"a": 6, "b": "new", "c": 7}
    conn = await db.conn()
    try:
        assert [(e[1], e[2], e[3]) for e in await events(conn, old.run_id)] == [
            (0, "step_completed", "patching.a"), (1, "step_completed", "patching.old_b"),
            (2, "step_completed", "patching.gate"), (3, "step_completed", "patching.a")]
        assert [(e[1], e[2], e[3]) for e in await events(conn, new.run_id)] == [
            (0, "step_completed", "patching.a"), (1, "patch", "new-b"),
            (2, "step_completed", "patching.new_b"), (3, "step_completed", "patching.a")]
    finally:
        await conn.close()


async def test_sigkilled_old_run_fails_naming_patched_under_unguarded_code(db, worker_procs, tmp_path):
    flag = str(tmp_path / "go")
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        old, _ = await killed_mid_step(db, worker_procs, client, flag)
        open(flag, "w").close()
        worker_procs("wf_patching_unguarded", "--lease-ttl", "2")
        with pytest.raises(durable.RunFailedError) as ei:
            await old.result(timeout=30)
    assert ei.value.type == "NonDeterminismError"
    assert "patching.old_b" in ei.value.message and 'ctx.patched("change-id")' in ei.value.message


async def test_a_worker_claims_only_the_versions_it_registers(db, worker_procs):
    v2 = registry.get_version("versions.flow", 2)
    registry.unregister("versions.flow", 2)
    try:
        async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
            v1_run = await client.start(V1.flow_v1, 1)  # a run of version 1
            worker_procs("wf_versions_v2", "--poll", "0.2")  # a worker with version 2 only
            await asyncio.sleep(1.5)  # several claim rounds
            assert await v1_run.status() == "pending"
            worker_procs("wf_versions", "--poll", "0.2")  # a worker with version 1 starts
            assert await v1_run.result(timeout=30) == "v1:1"
    finally:
        if v2 is not None:
            registry.register(v2)
