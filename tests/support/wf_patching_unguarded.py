"""The same change as wf_patching_new without ctx.patched (a worker process imports this module)."""

import wf_patching

wf_patching.CODE["mode"] = "unguarded"
