"""The CLI's papercuts of issue 14, against a real database: run ids by unique prefix
(unique, ambiguous, none, ids of trees made before schema v7, the plan of the lookup), one
duration syntax on every flag, and tables fitted to the terminal's width. (A closed stdout
and `durable embedded`: tests/procs/test_cli_subprocess.py, tests/procs/test_embedded.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any, Iterator

import pytest
import wf_cli
from helpers import execute, rows

from durable.cli import commands as cli
from durable.store.inspect import prefix_bounds
from durable.store.statements import q


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def run_cli(db: Any, *args: str, expect: int | None = 0, tty: bool = False) -> Result:
    out, err = (Tty() if tty else io.StringIO()), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, *args], stdout=out,
                                   stderr=err)
    res = Result(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in res.err, res.err
    if expect is not None:
        assert code == expect, f"exit {code}, expected {expect}\nstdout: {res.out}\nstderr: {res.err}"
    return res


# --- run id prefixes ---------------------------------------------------------------------------


async def test_unique_prefixes_work_wherever_a_run_id_is_taken(db, engine):
    echo = await engine.start(wf_cli.echo, {"a": 1})
    await echo.result(timeout=20)
    rid = str(echo.run_id)
    for given in (rid[:8], rid[:4], rid[:13].upper(), rid.replace("-", "")[:12]):
        assert (await run_cli(db, "show", given, "--json")).json["id"] == rid, given
    assert (await run_cli(db, "wait", rid[:8], "--json")).json["result"] == {"a": 1, "echoed": True}
    assert (await run_cli(db, "tree", rid[:8], "--json")).json["tree"]["id"] == rid

    box = await engine.start(wf_cli.inbox, "go")
    short = str(box.run_id)[:8]
    assert (await run_cli(db, "signal", short, "go", "--payload", "1", "--json")).json["run_id"] == str(box.run_id)
    assert (await box.result(timeout=20)) == {"got": 1}

    fam = await engine.start(wf_cli.family, 3)
    await fam.result(timeout=20)
    kids = (await run_cli(db, "runs", "--parent", str(fam.run_id)[:8] + "-" + str(fam.run_id)[9:23],
                          "--json")).json["runs"]
    # the root's own 8 digits are its whole tree's: ambiguous, a typed error naming some ids
    amb = await run_cli(db, "show", str(fam.run_id)[:8], expect=2)
    assert "matches 4 runs" in amb.err and str(fam.run_id) in amb.err and "more characters" in amb.err
    assert amb.out == ""
    amb_json = await run_cli(db, "--json", "cancel", str(fam.run_id)[:18], expect=2)
    assert amb_json.json["exit_code"] == 2 and "more characters" in amb_json.json["error"]
    # a child by the digits after its tree's (17+ hex digits), hyphens optional
    assert len(kids) == 3
    child = kids[0]["id"]
    width = next(n for n in range(17, 33) if len({k["id"].replace("-", "")[:n] for k in kids}) == 3)
    digits = child.replace("-", "")[:width]
    assert (await run_cli(db, "show", digits, "--json")).json["parent_id"] == str(fam.run_id)
    assert (await run_cli(db, "runs", "--root", str(fam.run_id), "--json")).json["runs"]

    sleepy = await engine.start(wf_cli.inbox, "never")
    cancelled = (await run_cli(db, "cancel", str(sleepy.run_id)[:8], "--json")).json
    assert cancelled["run_id"] == str(sleepy.run_id) and cancelled["status"] == "cancelled"


@pytest.mark.parametrize("given,code,words", [
    ("NONE", 3, "does not exist"),
    ("abc", 2, "unique prefix of at least 4 hex digits"),
    ("xyz12345", 2, "is not a run id"),
    ("0123456789abcdef0123456789abcdef01", 2, "is not a run id"),
])
async def test_bad_or_unknown_prefixes(db, given, code, words):
    if given == "NONE":
        given = uuid.uuid4().hex[:12]
    for argv in (["show", given], ["wait", given], ["runs", "--parent", given]):
        res = await run_cli(db, *argv, expect=code)
        assert words in res.err and res.out == ""


async def test_prefixes_find_runs_of_trees_made_before_schema_v7(db):
    """A run made before v7 does not carry its tree's key: durable_run_keys maps it."""
    root, old = uuid.uuid4(), uuid.uuid4()
    key = (await rows(db, "SELECT durable_tree_key(%s)", root))[0][0]
    await execute(db, "INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, "
                      "status, input) VALUES (%s, %s, %s, %s, 'old.root', 1, 'default', 'completed', '1')",
                  key, root, root, root)
    await execute(db, "INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, parent_id, workflow, version, "
                      "queue, status, input) VALUES (%s, %s, %s, %s, %s, 'old.child', 1, 'default', 'completed', '2')",
                  key, old, root, old, root)
    await execute(db, "INSERT INTO durable_run_keys (id, tree_key) VALUES (%s, %s)", old, key)
    shown = (await run_cli(db, "show", old.hex[:10], "--json")).json
    assert shown["id"] == str(old) and shown["root_id"] == str(root) and shown["workflow"] == "old.child"
    assert (await run_cli(db, "show", str(root)[:10], "--json")).json["workflow"] == "old.root"


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for sub in plan.get("Plans", ()):
        yield from _nodes(sub)


@pytest.mark.postgres_only("the shape of a plain PostgreSQL plan")
async def test_prefix_lookup_is_an_index_range_scan(db):
    """20,000 runs (plus 2,000 old ids in durable_run_keys), analysed: the lookup of a
    4-digit prefix reads both tables by their primary keys, a few rows, never all of them."""
    await execute(db, """
        INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input)
        SELECT durable_tree_key(g), g, g, g, 'plan.one', 1, 'default', 'completed', '{}'
          FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, 20000)) s""")
    await execute(db, "INSERT INTO durable_run_keys (id, tree_key) SELECT gen_random_uuid(), 1 "
                      "FROM generate_series(1, 2000)")
    await execute(db, "ANALYZE durable_runs")
    await execute(db, "ANALYZE durable_run_keys")
    some = (await rows(db, "SELECT id FROM durable_runs LIMIT 1"))[0][0]
    params = {**prefix_bounds(some.hex[:4]), "limit": 6}
    c = await db.conn()
    try:
        plan = (await (await c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q("runs_by_prefix"), params))
                .fetchone())[0][0]["Plan"]
    finally:
        await c.close()
    scans = [n for n in _nodes(plan) if "Relation Name" in n]
    assert {n["Relation Name"] for n in scans} == {"durable_runs", "durable_run_keys"}, scans
    for n in scans:  # (the planner may take another index led by tree_key: as bounded a range)
        assert n["Node Type"] in ("Index Scan", "Index Only Scan"), n
        assert n["Actual Rows"] + n.get("Rows Removed by Filter", 0) < 50, n
    runs_scan = next(n for n in scans if n["Relation Name"] == "durable_runs")
    assert "tree_key >=" in runs_scan["Index Cond"] and "tree_key <=" in runs_scan["Index Cond"], runs_scan
    keys_scan = next(n for n in scans if n["Relation Name"] == "durable_run_keys")
    assert keys_scan["Index Name"] == "durable_run_keys_pkey" and "id >=" in keys_scan["Index Cond"], keys_scan


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form,seconds", [("90", 90), ("10s", 10), ("5m", 300), ("2h", 7200), ("30d", 2592000),
                                          ("1h30m", 5400)])
async def test_every_duration_flag_takes_every_form(db, engine, form, seconds):
    done = await engine.start(wf_cli.echo, {})
    await done.result(timeout=20)
    connect = form if seconds <= 600 else "5m"  # at most 10 minutes (EngineSettings' bound)
    await run_cli(db, "--connect-timeout", connect, "runs", "--older-than", form, "--newer-than", form, "--json")
    waited = (await run_cli(db, "wait", str(done.run_id), "--timeout", form, "--json")).json
    assert waited["status"] == "completed"
    started = (await run_cli(db, "start", "cli.echo", "-m", "wf_cli", "-i", "{}", "--execution-timeout", form,
                             "--json")).json
    deadline = (await rows(db, "SELECT execution_timeout_s FROM durable_runs WHERE id = %s",
                           uuid.UUID(started["run_id"])))[0][0]
    assert float(deadline) == seconds
    assert (await run_cli(db, "gc", "--older-than", form, "--dry-run", "--json")).json["older_than_s"] == seconds


@pytest.mark.parametrize("argv,flag", [
    (["--connect-timeout", "10 sec", "runs"], "--connect-timeout"),
    (["runs", "--older-than", "10 sec"], "--older-than"),
    (["runs", "--newer-than", "1x"], "--newer-than"),
    (["wait", "UUID", "--timeout", "ten"], "--timeout"),
    (["start", "cli.echo", "-m", "wf_cli", "--execution-timeout", "1y"], "--execution-timeout"),
    (["gc", "--older-than", "5mins"], "--older-than"),
])
async def test_a_bad_duration_names_its_flag_and_the_forms(db, argv, flag):
    argv = [str(uuid.uuid4()) if a == "UUID" else a for a in argv]
    res = await run_cli(db, *argv, expect=2)
    assert flag in res.err and "10s, 5m, 2h, 30d" in res.err and "1h30m" in res.err, res.err


# --- tables fitted to the terminal ---------------------------------------------------------------


async def test_tables_fit_a_60_column_terminal(db, engine, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("NO_COLOR", "1")
    fam = await engine.start(wf_cli.family, 3)
    await fam.result(timeout=20)
    bad = await engine.start(wf_cli.fail, "a long explanation of what went wrong " * 3)
    with pytest.raises(Exception):
        await bad.result(timeout=20)

    piped = (await run_cli(db, "runs")).out.splitlines()
    assert max(map(len, piped)) > 60 and "…" not in "\n".join(piped)  # not a terminal: never cut
    fitted = (await run_cli(db, "runs", tty=True)).out.splitlines()
    table = fitted[:-1] if fitted[-1].startswith("more:") else fitted
    assert len(table) == 6 and all(len(line) <= 60 for line in table), fitted
    assert table[0].startswith("RUN ") and "WORKFLOW" in table[0]
    # the ids are shortened to prefixes that tell the rows apart, and the CLI takes them back
    printed = [line.split()[0] for line in table[1:]]
    assert len(set(printed)) == 5 and all(len(p) < 36 for p in printed)
    for p in printed:
        assert (await run_cli(db, "show", p, "--json")).json["id"].startswith(p)
    as_json = (await run_cli(db, "runs", "--json", tty=True)).json
    assert {r["id"] for r in as_json["runs"]} >= {str(fam.run_id), str(bad.run_id)}

    shown = (await run_cli(db, "show", str(bad.run_id), tty=True)).out.splitlines()
    events = shown[shown.index(next(line for line in shown if line.startswith("SEQ"))):]
    assert all(len(line) <= 60 for line in events) and any("…" in line for line in events), events
