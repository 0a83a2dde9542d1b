"""The short fault-injecting soak (bench/soak.py): a few dozen mixed workflow trees (fan-out
depth 3, durable sleeps, step and child retries, permanent failures, signals from outside
and between runs, raced duplicate deliveries, continue-as-new, cancels, concurrent branches)
on three dispatcher subprocesses, while dispatchers are SIGKILLed and restarted and their
database backends terminated; no PostgreSQL restart here (the bench does that). Every
invariant the checker knows must hold, and every root must be terminal with its expected
outcome. Bounded: the soak gives up on unfinished roots after its deadline (50 s) and
reports them as not_terminal.
"""

from __future__ import annotations

import json
import time

from bench import soak


async def test_short_soak_has_no_violations(db):
    t0 = time.monotonic()
    out = await soak.run(short=True, pg_restart=False, dsn=db.dsn, schema=db.schema)
    took = time.monotonic() - t0
    print(json.dumps(out))
    assert set(out["violations"]) == set(soak.VIOLATION_KINDS)
    bad = {k: n for k, n in out["violations"].items() if n}
    assert not bad, f"soak violations {bad}; details: {json.dumps(out)}"
    assert out["roots_by_status"].keys() <= {"completed", "failed", "cancelled"}, out["roots_by_status"]
    assert sum(out["roots_by_status"].values()) == out["roots"]
    assert out["faults"]["sigkill"] >= 1 and out["faults"]["terminate_backend"] >= 1, \
        f"no faults were injected; nothing was tested: {out['faults']}"
    assert took < 90, f"the short soak took {took:.0f} s"
