"""The workflow registry against real PostgreSQL: executing engines publish their workflows
at open (written once, not again while unchanged), a client that does not have a workflow
registered starts it by name (input checked against the registered JSON schema, the run on
the registered queue and version, the result converted by result_type=), bad names and bad
input are typed errors that write nothing, the worker list, the no-worker warning, and
idempotency conflicts. (Separate processes: tests/procs/test_registry_procs.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import wf_registry
from helpers import count, new_engine, rows
from pydantic import BaseModel

import durable
from durable.cli import commands as cli
from durable.runtime import registry as rt_registry


class Receipt(BaseModel):  # the client's own model of the result (it does not import wf_registry)
    sku: str
    total: int


def cli_run(db, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--dsn", db.dsn, "--schema", db.schema, *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def registry_row(db, name: str) -> tuple | None:
    got = await rows(db, "SELECT version, queue, input_schema, xmin::text, updated_at, registered_by "
                         "FROM durable_workflows WHERE name = %s", name)
    return got[0] if got else None


async def test_an_executing_engine_registers_its_workflows_once(db):
    assert wf_registry.checkout.name in rt_registry.all_workflows()
    async with new_engine(db, queues=("registry",)) as worker:
        first = await registry_row(db, "registry.checkout")
        assert first is not None
        version, queue, schema, xmin, updated_at, by = first
        assert (version, queue, by) == (1, "registry", worker.owner)
        assert schema["properties"]["qty"] == {"minimum": 1, "title": "Qty", "type": "integer"}
        assert schema["required"] == ["sku", "qty"]
    # a pure client writes nothing; a second executing engine with the same code neither
    async with new_engine(db, execute=False):
        pass
    async with new_engine(db, queues=("registry",)) as again:
        assert again.owner != by
        assert await registry_row(db, "registry.checkout") == first  # same xmin: no new row version

    # a changed definition (here: the queue) is written by the next engine to open
    changed = rt_registry.WorkflowDef(**{**wf_registry.checkout.__dict__, "queue": "registry-2"})
    rt_registry._workflows["registry.checkout"] = changed
    try:
        async with new_engine(db, queues=("registry-2",)) as third:
            now = await registry_row(db, "registry.checkout")
            assert now[1] == "registry-2" and now[3] != xmin and now[5] == third.owner and now[4] > updated_at
    finally:
        rt_registry._workflows["registry.checkout"] = wf_registry.checkout


@pytest.fixture
def remote_only():
    """Make this process forget registry.checkout after a worker registered it, so that the
    engine has to start it by name from the registry (as a process that never imported it)."""
    def forget() -> None:
        rt_registry.unregister("registry.checkout")
        rt_registry.unregister("registry.ping")

    yield forget
    rt_registry._workflows["registry.checkout"] = wf_registry.checkout
    rt_registry._workflows["registry.ping"] = wf_registry.ping


async def test_start_by_name_from_a_client_without_the_workflow(db, remote_only):
    async with new_engine(db, queues=("registry",)) as worker:
        async with new_engine(db, execute=False) as client:
            remote_only()  # (the worker in this process does not claim it meanwhile: not registered here)
            handle = await client.start("registry.checkout", {"sku": "x", "qty": 2}, result_type=Receipt)
            info = await handle.info()
            assert (info.workflow, info.version, info.queue) == ("registry.checkout", 1, "registry")
            rt_registry._workflows["registry.checkout"] = wf_registry.checkout  # the worker's code is back
            got = await handle.result(timeout=20)
            assert got == Receipt(sku="x", total=500) and isinstance(got, Receipt)
            # the plain JSON result without result_type=, and get_handle(result_type=)
            assert await client.result(handle.run_id, timeout=5) in ({"sku": "x", "total": 500},
                                                                     wf_registry.Receipt(sku="x", total=500))
            typed = await client.get_handle(handle.run_id, result_type=Receipt).result(timeout=5)
            assert typed == Receipt(sku="x", total=500)


async def test_unknown_name_and_input_failing_the_schema_write_nothing(db, remote_only):
    async with new_engine(db, queues=("registry",)):
        pass  # registered
    remote_only()
    async with new_engine(db, execute=False) as client:
        with pytest.raises(durable.WorkflowNotFoundError) as nf:
            await client.start("registry.chekout", {"sku": "x", "qty": 1})
        msg = str(nf.value)
        assert "'registry.chekout'" in msg and "closest registered names: 'registry.checkout'" in msg
        assert "start a worker that registers it" in msg
        with pytest.raises(durable.PayloadError) as bad:
            await client.start("registry.checkout", {"sku": "x", "qty": 0})
        assert "at $.qty: 0 is less than the minimum of 1" in str(bad.value)
        with pytest.raises(durable.PayloadError) as bad:
            await client.start("registry.checkout", {"qty": "two"})
        assert "at $: 'sku' is a required property" in str(bad.value)
        assert "at $.qty: 'two' is not of type 'integer'" in str(bad.value)
        with pytest.raises(durable.PayloadError) as bad:
            await client.run("registry.ping", {"unexpected": 1})
        assert "takes no input" in str(bad.value)
        with pytest.raises(durable.RunConflictError):  # by name too: a key with another input
            await client.start("registry.checkout", {"sku": "x", "qty": 1}, key="k1")
            await client.start("registry.checkout", {"sku": "x", "qty": 2}, key="k1")
        assert await count(db, "durable_runs") == 1
        assert await count(db, "durable_due") == 1
        rt_registry._workflows["registry.checkout"] = wf_registry.checkout
        same = await client.start(wf_registry.checkout, wf_registry.Order(sku="x", qty=1), key="k1")
        assert [(same.run_id,)] == await rows(db, "SELECT id FROM durable_runs")  # model defaults filled in
        rt_registry.unregister("registry.checkout")
        # the CLI: by name without --module; unknown names are usage errors naming the fix
        code, out, err = await asyncio.to_thread(cli_run, db, "start", "registry.chekout", "--input", "{}")
        assert code == 2 and "closest registered names: 'registry.checkout'" in err
        code, out, err = await asyncio.to_thread(cli_run, db, "start", "registry.checkout", "--input",
                                                 '{"sku": "y", "qty": -1}')
        assert code == 2 and "$.qty" in err
        assert await count(db, "durable_runs") == 1
        code, out, err = await asyncio.to_thread(cli_run, db, "start", "registry.checkout", "--input",
                                                 '{"sku": "y", "qty": 1}', "--json")
        assert code == 0, err
        assert (json.loads(out)["queue"], json.loads(out)["workflow"]) == ("registry", "registry.checkout")
        assert await count(db, "durable_runs") == 2


async def test_workers_list_and_the_no_worker_warning(db, remote_only, caplog):
    async with new_engine(db, queues=("registry",), concurrency=7) as worker:
        workers = await worker.list_workers()
        me = [w for w in workers if w.owner == worker.owner]
        assert len(me) == 1 and me[0].alive and me[0].queues == ["registry"] and me[0].concurrency == 7
        assert "registry.checkout:1" in me[0].workflows
        code, out, err = await asyncio.to_thread(cli_run, db, "workers", "--json")
        assert code == 0
        listed = {w["owner"]: w for w in json.loads(out)}
        assert listed[worker.owner]["alive"] is True and listed[worker.owner]["pid"] > 0
        code, out, err = await asyncio.to_thread(cli_run, db, "workers")
        assert code == 0 and "alive" in out and "registry" in out and "LAST SEEN" in out
        assert await worker.workers_serving("registry", "registry.checkout", 1) == 1
        assert await worker.workers_serving("elsewhere", "registry.checkout", 1) == 0
    # closed: listed as expired, serving nothing
    async with new_engine(db, execute=False) as client:
        gone = [w for w in await client.list_workers() if w.owner == worker.owner]
        assert len(gone) == 1 and not gone[0].alive
        code, out, err = await asyncio.to_thread(cli_run, db, "workers", "--alive", "--json")
        assert worker.owner not in {w["owner"] for w in json.loads(out)}
        code, out, err = await asyncio.to_thread(cli_run, db, "workflows", "--json")
        assert "registry.checkout" in {w["name"] for w in json.loads(out)}
        remote_only()
        # no live worker: run() logs a WARNING, start --wait prints one on stderr
        with caplog.at_level(logging.WARNING, logger="durable.engine"):
            with pytest.raises(durable.RunTimeoutError):
                await client.run("registry.ping", timeout=0.5)
        warned = [r for r in caplog.records if "no live worker serves queue 'registry'" in r.getMessage()]
        assert len(warned) == 1 and warned[0].workflow == "registry.ping"
    code, out, err = await asyncio.to_thread(cli_run, db, "start", "registry.ping", "--wait", "--timeout", "0.3s")
    assert code == 5 and "warning: no live worker serves queue 'registry'" in err
