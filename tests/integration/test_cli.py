"""The operator CLI against a real database: every command, human and --json output
(parsed back), exit codes, and clear errors for bad input. (The CLI as a subprocess with
no database: tests/procs/test_cli_subprocess.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from types import SimpleNamespace

import pytest
import wf_cli

import durable
from durable.cli import commands as cli
from durable.cli.common import STATUSES
from durable.cli.output import Out, use_color
from durable.store.migrate import LATEST_VERSION


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


async def run_cli(db, *args: str, expect: int | None = 0) -> Result:
    """``durable --dsn … --schema … ARGS`` in a thread (the CLI runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, *args], stdout=out,
                                   stderr=err)
    res = Result(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in res.err, res.err
    if expect is not None:
        assert code == expect, f"exit {code}, expected {expect}\nstdout: {res.out}\nstderr: {res.err}"
    return res


async def settled(handle, *statuses: str) -> str:
    for _ in range(500):
        status = await handle.status()
        if status in statuses:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {handle.run_id} stayed {status}")


async def test_migrate(fresh_schema):
    first = await run_cli(fresh_schema, "migrate", "--json")
    assert first.json["version"] == LATEST_VERSION and first.json["previous_version"] is None
    assert first.json["applied"] == list(range(1, LATEST_VERSION + 1))
    again = await run_cli(fresh_schema, "migrate")
    assert "up to date" in again.out


async def test_start_wait_and_signal(db, engine):
    started = await run_cli(db, "start", "cli.echo", "-m", "wf_cli", "--input", '{"a": 1}', "--json")
    rid = started.json["run_id"]
    assert started.json["workflow"] == "cli.echo"
    waited = await run_cli(db, "wait", rid, "--timeout", "20s", "--json")
    assert waited.json == {"run_id": rid, "status": "completed", "result": {"a": 1, "echoed": True}, "error": None}
    human = await run_cli(db, "wait", rid)
    assert json.loads(human.out) == {"a": 1, "echoed": True}

    box = (await run_cli(db, "--json", "start", "cli.inbox", "-m", "wf_cli", "--input", '"hello"')).json["run_id"]
    timed_out = await run_cli(db, "wait", box, "--timeout", "0.3", expect=5)
    assert "did not finish" in timed_out.err
    other = await run_cli(db, "signal", box, "other", "--delivery-id", "d1", "--json")
    assert other.json == {"run_id": box, "signal": "other", "delivered": True}
    again = await run_cli(db, "signal", box, "other", "--payload", "3", "--delivery-id", "d1")
    assert "already delivered" in again.out
    sent = await run_cli(db, "signal", box, "hello", "--payload", '{"x": [1, 2]}', "--json")
    assert sent.json == {"run_id": box, "signal": "hello", "delivered": True}
    assert (await run_cli(db, "wait", box, "--json", "--timeout", "20s")).json["result"] == {"got": {"x": [1, 2]}}
    finished = await run_cli(db, "signal", box, "hello", expect=1)
    assert "already completed" in finished.err

    failing = (await run_cli(db, "start", "cli.fail", "-m", "wf_cli", "--input", '"kaput"', "--json")).json["run_id"]
    failed = await run_cli(db, "wait", failing, "--json", expect=1)
    assert failed.json["status"] == "failed" and failed.json["error"]["type"] == "Boom"
    human_fail = await run_cli(db, "wait", failing, expect=1)
    assert "Boom: kaput" in human_fail.err


async def test_start_wait_execute_in_the_cli_process(db):
    res = await run_cli(db, "start", "cli.family", "-m", "wf_cli", "--input", "4", "--wait", "--execute",
                        "--timeout", "30s", "--json")
    assert res.json["status"] == "completed" and res.json["result"] == 0 + 1 + 4 + 9
    again = await run_cli(db, "start", "cli.echo", "-m", "wf_cli", "--input", '{"k": 1}', "--key", "order-7",
                          "--json")
    same = await run_cli(db, "start", "cli.echo", "-m", "wf_cli", "--input", '{"k": 1}', "--key", "order-7",
                         "--json")
    assert again.json["run_id"] == same.json["run_id"]  # an idempotency key returns the same run
    typed = await run_cli(db, "start", "cli.receipt", "-m", "wf_cli", "--input", '"o-9"', "--wait", "--execute")
    assert json.loads(typed.out) == {"order": "o-9", "total": 12.5}  # a pydantic result, printed as JSON


async def test_runs_filters_and_paging(db, engine):
    fam = await engine.start(wf_cli.family, 3)
    await fam.result(timeout=20)
    bad = await engine.start(wf_cli.fail, "x")
    with pytest.raises(durable.RunFailedError):
        await bad.result(timeout=20)
    everything = (await run_cli(db, "runs", "--json")).json
    assert len(everything["runs"]) == 5 and everything["next_cursor"] is None
    by = lambda *a: asyncio.ensure_future(run_cli(db, "runs", "--json", *a))
    failed = (await by("--status", "failed")).json["runs"]
    assert [r["id"] for r in failed] == [str(bad.run_id)] and failed[0]["error_type"] == "Boom"
    assert len((await by("--status", "completed,failed")).json["runs"]) == 5
    assert len((await by("--workflow", "cli.leaf")).json["runs"]) == 3
    assert {r["workflow"] for r in (await by("--workflow", "cli.f*")).json["runs"]} == {"cli.family", "cli.fail"}
    assert {r["parent_id"] for r in (await by("--parent", str(fam.run_id))).json["runs"]} == {str(fam.run_id)}
    assert len((await by("--root", str(fam.run_id))).json["runs"]) == 4
    assert len((await by("--top-level")).json["runs"]) == 2
    assert len((await by("--queue", "default")).json["runs"]) == 5
    assert (await by("--queue", "other")).json["runs"] == []
    assert (await by("--older-than", "1h")).json["runs"] == []
    assert len((await by("--newer-than", "1h")).json["runs"]) == 5

    seen, cursor, pages = [], None, 0
    while True:
        page = (await by("--limit", "2", *(["--cursor", cursor] if cursor else []))).json
        seen += [r["id"] for r in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted(r["id"] for r in everything["runs"]) and len(set(seen)) == 5

    human = (await run_cli(db, "runs", "--limit", "3")).out.splitlines()
    assert human[0].split() == ["RUN", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "TOOK", "ERROR"]
    col = human[0].index("STATUS")
    assert all(line[col:].split()[0] in STATUSES for line in human[1:4])
    assert "--cursor" in human[-1] and "\x1b[" not in "\n".join(human)  # no colours off a terminal


async def test_show(db, engine):
    fam = await engine.start(wf_cli.family, 2)
    await fam.result(timeout=20)
    doc = (await run_cli(db, "show", str(fam.run_id), "--json")).json
    assert doc["status"] == "completed" and doc["input"] == 2 and doc["result"] == 1
    assert doc["children"] == {"completed": 2} and doc["event_count"] == len(doc["events"])
    assert [e["kind"] for e in doc["events"]][:2] == ["child_started", "child_started"]
    assert doc["lease_expires_at"] is None and doc["started_at"] and doc["finished_at"]
    human = (await run_cli(db, "show", str(fam.run_id), "--events", "1")).out
    for word in ("status", "completed", "input", "result", "timing", "children", "history", "child_started"):
        assert word in human
    assert "first 1 shown" in human

    bad = await engine.start(wf_cli.fail, "kaput")
    await settled(bad, "failed")
    human = (await run_cli(db, "show", str(bad.run_id), "--full")).out
    assert "Boom: kaput" in human and "Traceback" in human  # the run's journaled traceback, on request
    box = await engine.start(wf_cli.inbox, "never")
    await settled(box, "suspended")
    shown = (await run_cli(db, "show", str(box.run_id), "--json")).json
    assert shown["status"] == "suspended" and shown["lease_expires_at"] is None


async def test_tree_follows_continue_as_new(db, engine):
    parent = await engine.start(wf_cli.parent_of_loop, 2)
    assert await parent.result(timeout=30) == 0
    doc = (await run_cli(db, "tree", str(parent.run_id), "--json")).json
    tree = doc["tree"]
    assert tree["id"] == str(parent.run_id) and doc["runs"] == 7 and not doc["truncated"]
    link = tree["children"][0]
    links = []
    while link:
        links.append(link)
        link = link["continued_as"]
    assert [ln["status"] for ln in links] == ["continued", "continued", "completed"]
    assert all(len(ln["children"]) == 1 and ln["children"][0]["workflow"] == "cli.leaf" for ln in links)
    human = (await run_cli(db, "tree", str(parent.run_id))).out
    assert human.count("↪ continued as") == 2 and "└── " in human and "cli.leaf" in human
    mid = (await run_cli(db, "tree", links[0]["id"], "--json")).json  # from the first link: the chain at the top
    assert mid["tree"]["continued_as"]["continued_as"]["status"] == "completed"
    cut = (await run_cli(db, "tree", str(parent.run_id), "--limit", "3", "--json")).json
    assert cut["truncated"] and cut["runs"] == 3


async def test_cancel(db, engine):
    sleepy = await engine.start(wf_cli.sleeper, 60)
    for _ in range(500):  # asleep: its leaf child done, its sleeping child started
        kids = (await run_cli(db, "runs", "--parent", str(sleepy.run_id), "--json")).json["runs"]
        if len(kids) == 2 and await sleepy.status() == "suspended":
            break
        await asyncio.sleep(0.02)
    res = (await run_cli(db, "cancel", str(sleepy.run_id), "--json")).json
    assert res["cancelled"] == 2 and res["status_before"] == "suspended" and res["status"] == "cancelled"
    again = await run_cli(db, "cancel", str(sleepy.run_id))
    assert "already cancelled" in again.out
    waited = await run_cli(db, "wait", str(sleepy.run_id), "--json", expect=1)
    assert waited.json["status"] == "cancelled"

    tag = uuid.uuid4().hex
    careful = await engine.start(wf_cli.careful, tag)
    await settled(careful, "suspended")
    asked = await run_cli(db, "cancel", str(careful.run_id), "--graceful")
    assert "asked run" in asked.out
    assert (await run_cli(db, "wait", str(careful.run_id), "--timeout", "20s", "--json", expect=1)).json[
        "status"] == "cancelled"
    assert tag in wf_cli.CLEANUPS  # it cleaned up before ending


async def test_gc(db, engine):
    fam = await engine.start(wf_cli.family, 2)
    await fam.result(timeout=20)
    box = await engine.start(wf_cli.inbox, "never")
    await settled(box, "suspended")
    dry = (await run_cli(db, "gc", "--older-than", "0s", "--dry-run", "--json")).json
    assert dry["runs"] == 3 and dry["dry_run"]
    res = (await run_cli(db, "gc", "--older-than", "0s", "--batch", "1", "--json")).json
    assert res["runs"] == 3 and res["events"] > 0 and res["batches"] >= 1  # the tree goes whole
    await run_cli(db, "show", str(fam.run_id), expect=3)
    human = await run_cli(db, "gc", "--older-than", "7d")
    assert human.out.startswith("deleted 0 run(s)")
    assert (await run_cli(db, "runs", "--json")).json["runs"][0]["id"] == str(box.run_id)


async def test_demo(db):
    res = await run_cli(db, "demo")
    assert "✓ completed in" in res.out and "total" in res.out
    assert "charge_card attempt 1 failed (ConnectionError); retrying" in res.out
    assert "charge_card (attempt 2)" in res.out and "A-1002" in res.out
    runs = (await run_cli(db, "runs", "--top-level", "--json")).json["runs"]
    assert runs[0]["workflow"] == "demo.checkout" and runs[0]["status"] == "completed"


@pytest.mark.parametrize("args,code,words", [
    (["show", "not-a-uuid"], 2, "is not a run id"),
    (["show", "UUID"], 3, "does not exist"),
    (["tree", "UUID"], 3, "does not exist"),
    (["wait", "UUID"], 3, "does not exist"),
    (["cancel", "UUID"], 3, "does not exist"),
    (["signal", "UUID", "go"], 3, "does not exist"),
    (["signal", "UUID", "go", "--payload", "{bad"], 2, "not valid JSON"),
    (["start", "cli.echo", "-m", "wf_cli", "--input", "{bad"], 2, "not valid JSON"),
    (["start", "cli.echo", "-m", "wf_cli", "--input", '"not an object"'], 2, "input of workflow"),
    (["start", "no.such.workflow"], 2, "--module"),
    (["start", "cli.echo", "-m", "no_such_module_xyz"], 2, "could not import"),
    (["start", "cli.echo", "-m", "wf_cli", "--input", "@/nonexistent.json"], 2, "cannot read"),
    (["start", "cli.echo", "-m", "wf_cli", "--input", "{}", "--execute"], 2, "add --wait"),
    (["gc", "--older-than", "soon"], 2, "not a duration"),
    (["gc"], 2, "--older-than"),
    (["wait", "UUID", "--timeout", "3x"], 2, "not a duration"),
    (["runs", "--status", "done"], 2, "unknown status"),
    (["runs", "--cursor", "garbage"], 2, "not a cursor"),
    (["runs", "--older-than=-1h"], 2, "not a duration"),
    (["runs", "--limit", "0"], 2, "--limit"),
    (["frobnicate"], 2, "invalid choice"),
])
async def test_bad_input_is_a_clear_error(db, args, code, words):
    args = [str(uuid.uuid4()) if a == "UUID" else a for a in args]
    res = await run_cli(db, *args, expect=code)
    assert words in res.err
    assert res.out == ""


async def test_json_errors_and_unmigrated_schema(db):
    res = await run_cli(db, "--json", "show", str(uuid.uuid4()), expect=3)
    assert res.json["exit_code"] == 3 and "does not exist" in res.json["error"]
    unmigrated = SimpleNamespace(dsn=db.dsn, schema=f"t_none_{uuid.uuid4().hex[:8]}")  # never created
    res = await run_cli(unmigrated, "runs", expect=4)
    assert "not migrated" in res.err and "durable migrate" in res.err


def test_colours_only_on_a_terminal_without_no_color(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Tty()) and not use_color(io.StringIO())
    out = Out(Tty(), io.StringIO())
    assert out.status("failed") == "\x1b[31mfailed\x1b[0m"
    assert Out(Tty(), io.StringIO(), json_mode=True).status("failed") == "failed"
    monkeypatch.setenv("NO_COLOR", "")
    assert not use_color(Tty())
