"""Smoke: a worker subprocess (tests/support/worker_proc.py) runs a workflow this process
starts. (The same workflow in-process: tests/integration/test_smoke.py.)"""

import durable
from wf_basic import add_flow


async def test_worker_subprocess_runs_it(db, worker_procs):
    worker_procs("wf_basic")
    async with durable.Engine(db.dsn, schema=db.schema, execute=False) as client:
        h = await client.start(add_flow, 5)
        assert await h.result(timeout=10) == 7
