"""Version 2 of versions.flow (see wf_versions)."""

from __future__ import annotations

import durable


@durable.workflow("versions.flow", version=2)
async def flow_v2(ctx: durable.Context, n: int) -> str:
    await ctx.sleep(0.01)
    await ctx.sleep(0.01)  # another shape: a v1 history would not replay here
    return f"v2:{n}"
