"""The patched deploy of wf_patching (a worker process imports this module)."""

import wf_patching

wf_patching.CODE["mode"] = "patched"
