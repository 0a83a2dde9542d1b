"""Two versions of one workflow (tests/integration/test_versions.py,
tests/procs/test_patching_procs.py). This module registers version 1 only; wf_versions_v2
registers version 2 (a process importing both runs both)."""

from __future__ import annotations

import durable


@durable.workflow("versions.flow", version=1)
async def flow_v1(ctx: durable.Context, n: int) -> str:
    await ctx.sleep(0.01)
    return f"v1:{n}"
