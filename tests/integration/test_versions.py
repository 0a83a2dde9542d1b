"""Several versions of one workflow registered in one process: a run stays on the version
it started with, new runs take the newest, and a process claims only the (workflow, version)
pairs it registers: a run of a version no process has stays due until one that has it
starts. (Separate processes: tests/procs/test_patching_procs.py.)"""

from __future__ import annotations

import asyncio

import durable
import wf_versions as V1
import wf_versions_v2 as V2
from durable.runtime import registry
from helpers import new_engine, rows


def register_v2() -> durable.WorkflowDef:
    return registry.register(V2.flow_v2)


async def test_two_versions_in_one_process_each_complete_their_runs(db):
    registry.unregister("versions.flow", 2)
    async with new_engine(db, execute=False) as client:
        old = [await client.start("versions.flow", i) for i in range(3)]  # only v1 known: v1 runs
    v2 = register_v2()
    try:
        assert registry.get_workflow("versions.flow") is v2  # new runs take the newest
        async with new_engine(db) as engine:
            new = [await engine.start("versions.flow", i) for i in range(3, 5)]
            new.append(await engine.start(V1.flow_v1, 5))  # by definition too: the newest version
            results = await asyncio.gather(*(engine.result(h.run_id, timeout=20) for h in old + new))
        assert results == ["v1:0", "v1:1", "v1:2", "v2:3", "v2:4", "v2:5"]
        got = dict((r[0], r[1]) for r in await rows(db, "SELECT id, version FROM durable_runs"))
        assert [got[h.run_id] for h in old + new] == [1, 1, 1, 2, 2, 2]
    finally:
        register_v2()


async def test_a_process_without_the_version_does_not_claim_its_runs(db):
    register_v2()
    async with new_engine(db, execute=False) as client:
        registry.unregister("versions.flow", 2)
        v1_run = await client.start("versions.flow", 1)  # started as version 1
        register_v2()
        registry.unregister("versions.flow", 1)  # this process now has version 2 only
        try:
            async with new_engine(db) as engine:
                v2_run = await engine.start("versions.flow", 2)
                assert await v2_run.result(timeout=20) == "v2:2"
                engine.claimer.kick()
                await asyncio.sleep(1.0)  # several claims (poll 0.2 s): none takes the v1 run
                assert await v1_run.status() == "pending"
                workers = await rows(db, "SELECT workflows FROM durable_workers WHERE owner = %s", engine.owner)
                assert workers and "versions.flow:1" not in workers[0][0] and "versions.flow:2" in workers[0][0]
        finally:
            registry.register(V1.flow_v1)  # a worker with v1 starts
        async with new_engine(db) as engine:
            assert await client.result(v1_run.run_id, timeout=20) == "v1:1"
