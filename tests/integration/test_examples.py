"""Every example runs to its expected result in-process on the test's engine, and each
has its two-line README with its command. (One run through its documented command,
``python -m examples.NAME``: tests/procs/test_examples_command.py.)"""

from __future__ import annotations

import sys

from helpers import ROOT

EXAMPLES = ["cadence", "iwf", "temporal", "training"]
if str(ROOT) not in sys.path:  # examples/ lives at the repository root, beside the package
    sys.path.insert(0, str(ROOT))

from examples.cadence.workflows import main as cadence_main
from examples.iwf.workflows import main as iwf_main
from examples.temporal.workflows import main as temporal_main
from examples.training.workflows import main as training_main


async def test_cadence_patterns(engine):
    r = await cadence_main(engine)
    job = r["chunked job"]
    assert job["succeeded"] == ["job-1-0", "job-1-2"] and job["items_processed"] == 5
    assert [f["chunk"] for f in job["failed"]] == ["job-1-1"] and "ValidationError" in job["failed"][0]["error"]
    assert r["chunked job, cancelled gracefully"] == {
        "job": "cancelled", "chunks": ["cancelled", "cancelled"], "cleaned_up": ["job-slow-0", "job-slow-1"]}
    assert r["fan-out"] == {"total": 4, "succeeded": 3, "failed": 1, "results": [10, 20, None, 40]}
    assert r["fan-in"] == {"children": ["east", "west"], "count": 3, "data": [1, 2, 3]}
    assert r["map-reduce"] == {"words": 9, "top": [["the", 3], ["sat", 2], ["cat", 1]]}
    sg = r["scatter-gather"]
    assert sorted(sg["arrival_order"]) == [0, 1, 2] and sg["total"] == 1 + 4 + 9 + 16 + 25 + 36
    assert r["hierarchy"]["regions"].keys() == {"US", "EU", "APAC"}
    assert r["hierarchy"]["units"] == sum(r["hierarchy"]["regions"].values()) == 196


async def test_temporal_patterns(engine):
    r = await temporal_main(engine)
    assert r["synchronous child"] == "Parent received: HELLO"
    assert r["asynchronous child"]["child result"] == "ASYNC"
    assert r["parallel children"] == "A, B, C"
    ff = r["fire-and-forget"]
    assert ff["parent"] == "completed" and ff["child result"] == "archived logs-2024"
    assert ff["child when the parent ended"] in ("pending", "running", "suspended")  # it outlived its parent
    assert r["conditional: small order"] == "Order o-1 fulfilled"
    assert r["conditional: big order"] == "Order rejected"
    assert r["conditional: no approval needed"] == "Order o-3 fulfilled"


async def test_training_patterns(engine):
    r = await training_main(engine)
    assert r["batches with a durable sleep"] == {"batches": 3, "processed": 7, "total": 2 * sum(range(7))}
    stream = r["streaming results"]
    assert sorted(stream["completion_order"]) == ["medium", "quick", "slow"] and stream["failed"] == 0
    assert stream["completion_order"][-1] == "slow"  # 0.6 s of durable sleep, the others 0.3 s or none
    assert r["partial failure under the threshold"] == {"succeeded": ["a", "d"], "failed": ["b", "c"]}
    comp = r["partial failure over the threshold (compensated)"]
    assert comp["failed"] == ["b", "c"] and comp["rolled_back"] == ["rolled back a", "rolled back d"]
    assert r["circuit breaker"] == {"results": ["p1", "p2"], "open": True, "skipped": ["p3"]}
    limited = r["bounded concurrency"]
    assert limited["results"] == list(range(8)) and 1 <= limited["peak_concurrency"] <= 3


async def test_iwf_patterns(engine):
    r = await iwf_main(engine)
    assert r["option 1: children signal completion"] == {"values": {"n2": 4, "n3": 9, "n4": 16},
                                                        "children_results": [4, 9, 16]}
    assert r["option 2: refunds before any invoice was paid"] == {"R-A": "suspended", "R-B": "suspended"}
    refunds = r["option 2: refunds (M:N)"]
    assert refunds["R-A"] == {"invoices": ["INV-1", "INV-2", "INV-3"], "receipt": "R-A: refunded 60.00"}
    assert refunds["R-B"] == {"invoices": ["INV-2", "INV-3", "INV-4"], "receipt": "R-B: refunded 90.00"}


def test_each_example_has_a_two_line_readme_and_a_command():
    for name in EXAMPLES:
        folder = ROOT / "examples" / name
        lines = [ln for ln in (folder / "README.md").read_text().splitlines() if ln.strip()]
        assert len(lines) == 2, name
        assert f"python -m examples.{name}" in lines[1]
        assert (folder / "__main__.py").is_file()
