"""Structured failures and honest logs (issue 14) against real PostgreSQL.

The error document keeps a cause chain (run → child → step → application error) with the
application's own type, message, non_retryable and details; RunFailedError /
ChildFailedError expose it as typed links (``cause``, ``root_type``), the same live and
on replay; non-retryable application errors stop step and child retry policies; the CLI
prints the root cause. Every outcome of a run is exactly one log line from
``durable.runs`` with structured fields and no payloads (a dispatcher subprocess's JSON
lines: tests/procs/test_failure_logs.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
import wf_failures as wf
from test_cli import run_cli

import durable
from durable.failures import MAX_LINKS, MAX_MESSAGE, bounded, error_doc
from helpers import eventually, execute, new_engine, rows, status_of

SECRET = "SECRET-4111-1111"


def job(tag: str | None = None) -> dict[str, Any]:
    return {"tag": tag or uuid.uuid4().hex, "secret": SECRET}


async def failure(engine: durable.Engine, workflow: Any, payload: dict[str, Any]) -> tuple[uuid.UUID, durable.RunFailedError]:
    h = await engine.start(workflow, payload)
    with pytest.raises(durable.RunFailedError) as got:
        await h.result(timeout=30)
    return h.run_id, got.value


async def error_of(db: Any, run_id: uuid.UUID) -> dict[str, Any]:
    (doc,), = await rows(db, "SELECT error FROM durable_runs WHERE id = %s", run_id)
    return doc


# --- the cause chain --------------------------------------------------------------------------------


async def test_keyerror_in_a_step_is_the_root_of_the_chain(db, engine):
    run_id, exc = await failure(engine, wf.keyerror, job())
    assert exc.type == "StepError"  # the outermost link, as before
    assert exc.root_type == "KeyError" and exc.root_message == repr(SECRET)
    assert [link.type for link in exc.cause.chain()] == ["StepError", "KeyError"]
    assert exc.cause.run_id == str(run_id) and exc.cause.workflow == "fail.keyerror" and exc.cause.step == "lookup"
    assert "KeyError" in str(exc)
    doc = await error_of(db, run_id)
    assert doc["root"] == {"type": "KeyError", "message": repr(SECRET)}
    assert doc["traceback"] and "traceback" not in doc["cause"], "only the top link keeps a traceback"
    assert doc["cause"]["module"] == "builtins" and doc["run_id"] == str(run_id)


async def test_application_error_keeps_type_details_and_is_not_retried(db, engine):
    payload = job()
    run_id, exc = await failure(engine, wf.declined, payload)
    assert wf.ATTEMPTS[payload["tag"]] == 1, "non_retryable stops a policy of 5 attempts at the first"
    root = exc.root
    assert root is not None and exc.root_type == "Declined" and root.message == "card refused"
    assert root.details == {"code": 51, "card": "tail-1234"} and root.non_retryable
    assert exc.cause.non_retryable, "the step's wrapper is as final as its root"
    (kinds,), = await rows(db, "SELECT array_agg(kind ORDER BY seq) FROM durable_events WHERE run_id = %s", run_id)
    assert "step_retry" not in kinds


async def test_grandchild_type_is_the_root_type_two_levels_up(db, engine):
    payload = job()
    run_id, exc = await failure(engine, wf.top, payload)
    assert exc.type == "ChildFailedError" and exc.root_type == "Declined"
    chain = list(exc.cause.chain())
    assert [link.type for link in chain] == ["ChildFailedError", "ChildFailedError", "StepError", "Declined"]
    assert [link.workflow for link in chain[:3]] == ["fail.top", "fail.mid", "fail.declined"]
    assert chain[0].run_id == str(run_id)
    assert len({link.run_id for link in chain[:3]}) == 3, "each run link names its own run"
    assert chain[-1].details == {"code": 51, "card": "tail-1234"}
    assert all(link.non_retryable for link in chain)
    doc = await error_of(db, run_id)
    assert doc["root"]["type"] == "Declined"
    assert "root" not in doc["cause"] and "traceback" not in doc["cause"]


async def test_the_run_failed_hook_carries_the_root_type(db, engine):
    seen: list[tuple[str, str]] = []
    off = durable.hooks.on("run.failed", lambda ev: seen.append((ev["error_type"], ev["root_error_type"])))
    try:
        await failure(engine, wf.keyerror, job())
    finally:
        off()
    assert seen == [("StepError", "KeyError")]


async def test_catching_a_child_failure_sees_the_root_type_on_replay(db):
    """The except clause reads the outcome from the journal: after the engine is closed
    and another opened, the replay sees the same root_type, chain and details."""
    payload = job()
    async with new_engine(db) as first:
        h = await first.start(wf.catch, payload)
        await eventually(lambda: _status_is(db, h.run_id, "suspended"))
        await eventually(lambda: _has_step(db, h.run_id, "note"))
    async with new_engine(db) as second:
        await second.signal(h.run_id, "go")
        seen = await second.get_handle(h.run_id).result(timeout=30)
    assert seen == {"type": "ChildFailedError", "root_type": "Declined",
                    "chain": ["ChildFailedError", "StepError", "Declined"],
                    "details": {"code": 51, "card": "tail-1234"}, "non_retryable": True}
    assert wf.ATTEMPTS[payload["tag"]] == 1, "the grandchild's step did not run again"
    (noted,), = await rows(db, "SELECT data ->> 'result' FROM durable_events WHERE run_id = %s AND name = 'note'",
                           h.run_id)
    assert noted == "Declined"


async def _status_is(db: Any, run_id: uuid.UUID, status: str) -> bool:
    return await status_of(db, run_id) == status


async def _has_step(db: Any, run_id: uuid.UUID, name: str) -> bool:
    return bool(await rows(db, "SELECT 1 FROM durable_events WHERE run_id = %s AND name = %s", run_id, name))


async def test_non_retryable_child_failure_stops_the_childs_retry_policy(db, engine):
    payload = job()
    run_id, exc = await failure(engine, wf.final_parent, payload)
    assert exc.root_type == "Declined" and wf.ATTEMPTS[payload["tag"]] == 1
    continued = await rows(db, "SELECT id FROM durable_runs WHERE root_id = %s AND status = 'continued'", run_id)
    assert continued == [], "a non-retryable failure is not retried by the child's policy of 3 attempts"


async def test_a_retryable_child_failure_is_retried(db, engine):
    payload = job()
    _, exc = await failure(engine, wf.retry_parent, payload)
    assert exc.root_type == "KeyError" and wf.ATTEMPTS[payload["tag"]] == 2


def test_documents_are_bounded():
    long = durable.ApplicationError("x" * (MAX_MESSAGE + 500), type="Big", details={"blob": "y" * 10_000})
    doc = error_doc(long)
    assert len(doc["message"]) < MAX_MESSAGE + 60 and doc["message"].endswith("more characters cut]")
    assert isinstance(doc["details"], str) and "left out" in doc["details"]
    deep: dict[str, Any] = {"type": "Root", "message": "the root"}
    for i in range(30):
        deep = {"type": f"Wrap{i}", "message": "m", "traceback": "tb", "cause": deep}
    cut = bounded(deep)
    links = []
    link: Any = cut
    while link:
        links.append(link)
        link = link.get("cause")
    assert len(links) == MAX_LINKS and links[-2]["type"] == "ChainTruncated" and links[-1]["type"] == "Root"
    assert cut["root"] == {"type": "Root", "message": "the root"}
    assert all("traceback" not in one for one in links[1:])
    err = durable.RunFailedError("r", cut)
    assert err.root_type == "Root" and err.type == "Wrap29"


def test_raise_from_adds_the_cause():
    try:
        try:
            {}["k"]
        except KeyError as inner:
            raise durable.ApplicationError("order failed", type="OrderFailed") from inner
    except durable.ApplicationError as exc:
        doc = error_doc(exc)
    assert doc["type"] == "OrderFailed" and doc["cause"]["type"] == "KeyError" and doc["root"]["type"] == "KeyError"


# --- the CLI prints the root cause --------------------------------------------------------------------


async def test_cli_runs_and_show_print_the_root_cause(db, engine):
    run_id, _ = await failure(engine, wf.top, job())
    listed = await run_cli(db, "runs", "--status", "failed", "--workflow", "fail.top")
    line = next(ln for ln in listed.out.splitlines() if str(run_id) in ln)
    assert "Declined: card refused" in line and "ChildFailedError" not in line
    as_json = await run_cli(db, "runs", "--status", "failed", "--workflow", "fail.top", "--json")
    row = next(r for r in as_json.json["runs"] if r["id"] == str(run_id))
    assert row["error_type"] == "Declined" and row["error_message"] == "card refused"
    shown = await run_cli(db, "show", str(run_id))
    assert "Declined: card refused" in shown.out
    chain = [ln for ln in shown.out.splitlines() if "ChildFailedError" in ln or "StepError" in ln or "Declined" in ln]
    assert any("chain: ChildFailedError" in ln and "fail.top" in ln for ln in chain)
    assert any("StepError" in ln and "step 'charge'" in ln for ln in chain)
    assert any("Declined" in ln and '"code": 51' in ln for ln in chain)


# --- logs: one line per outcome, structured, no payloads ---------------------------------------------


def run_lines(caplog: pytest.LogCaptureFixture, run_id: uuid.UUID, level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "run_id", None) == str(run_id) and r.levelno >= level]


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    for r in caplog.records:
        text = r.getMessage() + json.dumps(vars(r), default=str)
        assert SECRET not in text, f"a log line shows the payload: {r.name}: {r.getMessage()}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="durable")
    return caplog


async def test_a_failed_run_is_one_warning_line_per_run(db, engine, logs):
    run_id, exc = await failure(engine, wf.top, job())
    chain = list(exc.cause.chain())
    for link in chain[:3]:
        await eventually(lambda: bool(run_lines(logs, uuid.UUID(link.run_id))))
        lines = run_lines(logs, uuid.UUID(link.run_id))
        assert len(lines) == 1, [r.getMessage() for r in lines]
        r = lines[0]
        assert r.name == "durable.runs" and r.levelno == logging.WARNING
        assert (r.workflow, r.attempt, r.error_type, r.reason) == (link.workflow, 1, "Declined", "failed")
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]
    debug = [r for r in logs.records if getattr(r, "run_id", None) == str(run_id) and r.levelno == logging.DEBUG]
    assert {r.event for r in debug} >= {"run.claimed", "run.suspended", "run.resumed"}
    assert all(r.workflow == "fail.top" for r in debug)
    assert_no_secret(logs)


async def test_a_retried_run_is_one_info_line_then_its_failure(db, engine, logs):
    run_id, exc = await failure(engine, wf.retry_parent, job())
    first_child = exc.cause.cause
    assert first_child is not None and first_child.run_id is not None
    # the failed run the parent sees is the chain's last attempt; its first attempt was retried
    retried = [r for r in logs.records if getattr(r, "reason", None) == "retried"]
    assert len(retried) == 1 and retried[0].levelno == logging.INFO
    assert (retried[0].workflow, retried[0].attempt, retried[0].error_type) == ("fail.retried_child", 1, "KeyError")
    assert retried[0].successor_run_id == first_child.run_id
    assert len(run_lines(logs, uuid.UUID(retried[0].run_id))) == 1
    last = run_lines(logs, uuid.UUID(first_child.run_id))
    assert [(r.reason, r.attempt, r.levelno) for r in last] == [("failed", 2, logging.WARNING)]
    assert [r.reason for r in run_lines(logs, run_id)] == ["failed"]
    assert_no_secret(logs)


async def test_a_cancelled_run_is_one_info_line(db, engine, logs):
    h = await engine.start(wf.waits, job())
    await eventually(lambda: _status_is(db, h.run_id, "suspended"))
    await engine.cancel(h.run_id)
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=10)
    await asyncio.sleep(0.5)  # the parked execution hears the cancel and stops
    lines = run_lines(logs, h.run_id)
    assert [(r.reason, r.levelno, r.workflow) for r in lines] == [("cancelled", logging.INFO, "fail.waits")]
    assert_no_secret(logs)


async def test_a_gracefully_cancelled_run_is_one_info_line(db, engine, logs):
    h = await engine.start(wf.waits, job())
    await eventually(lambda: _status_is(db, h.run_id, "suspended"))
    await engine.cancel(h.run_id, graceful=True)
    with pytest.raises(durable.RunCancelledError):
        await h.result(timeout=10)
    lines = run_lines(logs, h.run_id)
    assert [(r.reason, r.levelno, r.attempt) for r in lines] == [("cancelled", logging.INFO, 1)]
    assert_no_secret(logs)


async def test_a_timed_out_run_is_one_warning_line(db, engine, logs):
    h = await engine.start(wf.waits, job(), timeout=0.5)
    with pytest.raises(durable.RunFailedError) as got:
        await h.result(timeout=15)
    assert got.value.type == "WorkflowTimeoutError"
    await eventually(lambda: bool(run_lines(logs, h.run_id)))
    await asyncio.sleep(0.3)
    lines = run_lines(logs, h.run_id)
    assert [(r.reason, r.levelno, r.error_type) for r in lines] == [
        ("timed_out", logging.WARNING, "WorkflowTimeoutError")]
    assert_no_secret(logs)


async def test_a_timed_out_run_no_process_executes_is_logged_by_the_sweep(db, logs):
    async with new_engine(db) as first:
        h = await first.start(wf.waits, job(), timeout=1.5)
        await eventually(lambda: _status_is(db, h.run_id, "suspended"))
    async with new_engine(db, execute=True) as second:
        await eventually(lambda: _status_is(db, h.run_id, "failed"))
        await asyncio.sleep(0.3)
    lines = run_lines(logs, h.run_id)
    assert [(r.reason, r.levelno, r.workflow, r.attempt) for r in lines] == [
        ("timed_out", logging.WARNING, "fail.waits", 1)]
    assert not [r for r in logs.records if "exceeded their execution timeout" in r.getMessage()], \
        "the sweep named the run instead of counting it"


async def test_a_lost_lease_is_one_warning_line(db, engine, logs):
    wf.HOLD = asyncio.Event()
    h = await engine.start(wf.holds, job())
    await eventually(lambda: _status_is(db, h.run_id, "running"))
    await asyncio.sleep(0.2)  # the step is running
    await execute(db, "INSERT INTO durable_workers (owner, host, pid, queues, workflows, concurrency, expires_at) "
                      "VALUES ('elsewhere', 'h', 1, '{}', '{}', 1, now() + interval '1 hour')")
    await execute(db, "UPDATE durable_runs SET lease_owner = 'elsewhere' WHERE id = %s", h.run_id)
    await execute(db, "UPDATE durable_due SET owner = 'elsewhere' WHERE run_id = %s", h.run_id)
    await engine.runs.renew_leases()
    wf.HOLD.set()
    await eventually(lambda: bool(run_lines(logs, h.run_id)))
    await asyncio.sleep(0.2)
    lines = run_lines(logs, h.run_id)
    assert [(r.reason, r.levelno, r.workflow) for r in lines] == [("lease_lost", logging.WARNING, "fail.holds")]
    assert_no_secret(logs)


async def test_ctx_log_lines_carry_the_run_id(db, engine, logs):
    h = await engine.start(wf.logs_line, job())
    assert await h.result(timeout=10) == "ok"
    (line,) = [r for r in logs.records if r.getMessage() == "hello from the workflow"]
    assert line.name == "durable.workflow.fail.logs"
    assert (line.run_id, line.workflow, line.order) == (str(h.run_id), "fail.logs", "o-1")
