"""Fault-injecting soak: many mixed workflow trees on several dispatcher subprocesses while
dispatchers are SIGKILLed, database backends terminated and (optionally) the PostgreSQL
server restarted; then the invariant checker (bench/soak_check.py) reads the tables and the
step-execution records.

    python -m bench.soak                  # the bench: a few hundred trees, one PG restart
    python -m bench.soak --short --no-pg-restart   # the variant tests/procs/test_soak.py runs

Options: ``--roots N``, ``--dispatchers N`` (3), ``--seed N``, ``--deadline S`` (seconds for
the runs to finish), ``--short``, ``--pg-restart/--no-pg-restart`` (default on, off with
--short), ``--keep`` (keep the schema and the temp folder of logs and step records).

The PostgreSQL restart is ``pg_ctlcluster --skip-systemctl-redirect VERSION main restart``
(VERSION from /etc/postgresql), or the shell command in ``BENCH_PG_RESTART`` when set: it
restarts the whole server, so never use it on a server other work shares.

Trees are defined in bench/soak_workflows.py (every root's expected outcome is computed
from its input); the invariant checker, and the list of the violations it reports (all of
them, 0 when none), is bench/soak_check.py.

Last line: {"runs", "faults": {"sigkill", "terminate_backend", "pg_restart"}, "violations",
"reexecuted_steps", "recovery_s_after_pg_restart", "s", ...details}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import psycopg

import durable
from bench import soak_check
from bench import soak_workflows as wf
from bench.common import drop_schema, make_schema, progress, resolve_dsn
from durable.store.connections import connect, masked
from durable.store.rows import tree_key_of

ROOT = Path(__file__).resolve().parent.parent

VIOLATION_KINDS = soak_check.VIOLATION_KINDS  # every kind the report's "violations" has
# (kind, weight) of the root mix; the first roots take one of each kind
MIX = (("tree", 30), ("branches", 14), ("child_retry", 10), ("doomed", 12), ("signals", 14), ("loop", 10),
       ("hold", 10))
RACED_SENDS = 4            # concurrent sends of one delivery id
RACE_CANCEL_FRACTION = 0.04  # ordinary trees also cancelled at a random moment (may finish first)


@dataclass
class Config:
    roots: int = 300
    dispatchers: int = 3
    start_window_s: float = 30.0   # roots are started spread over this window
    deadline_s: float = 240.0      # from the first start until every root must be terminal
    kill_every_s: float = 5.0      # SIGKILL of a random dispatcher (then a restart)
    term_every_s: float = 2.5      # pg_terminate_backend of random dispatcher backends
    term_per_round: int = 2
    pg_restart: bool = True
    lease_ttl_s: float = 3.0
    seed: int = 0
    keep: bool = False

    @classmethod
    def short(cls, **kw: Any) -> "Config":
        base = dict(roots=60, start_window_s=10.0, deadline_s=50.0, kill_every_s=3.0, term_every_s=1.5,
                    pg_restart=False)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


def with_app_name(dsn: str, name: str) -> str:
    if "://" in dsn:
        return dsn + ("&" if "?" in dsn else "?") + f"application_name={name}"
    return f"{dsn} application_name={name}"


# --- dispatcher subprocesses ----------------------------------------------------------------


class Dispatcher:
    """One ``python -m dispatcher -m bench.soak_workflows`` subprocess; stderr (its JSON log)
    and stdout go to files in the run's folder."""

    def __init__(self, n: int, dsn: str, schema: str, folder: Path, app: str, cfg: Config) -> None:
        self.n = n
        self.log = folder / f"dispatcher-{n}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "SOAK_STEP_DIR": str(folder / "steps")}
        env.pop("DURABLE_DSN", None)
        args = [sys.executable, "-m", "dispatcher", "-m", "bench.soak_workflows", "--dsn", with_app_name(dsn, app),
                "--schema", schema, "--metrics-port", "0", "--log-format", "json",
                "--lease-ttl", str(cfg.lease_ttl_s), "--poll-interval", "0.5", "--concurrency", "300",
                "--pool-size", "6", "--connect-timeout", "3", "--grace", "2"]
        with open(self.log, "w") as err, open(folder / f"dispatcher-{n}.out", "w") as out:
            self.popen = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=out, stderr=err)
        self.pid = self.popen.pid
        self.killed_m: float | None = None   # monotonic time of our SIGKILL
        self.ended_m: float | None = None    # monotonic time we saw it gone
        self.stopping = False

    def is_ready(self) -> bool:
        try:
            return '"event": "ready"' in self.log.read_text()
        except OSError:
            return False

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return True
            if self.popen.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        self.killed_m = time.monotonic()
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self.ended_m = time.monotonic()

    async def stop(self, grace: float = 6.0) -> None:
        # a SIGTERM before the interpreter has loaded the dispatcher's code kills it like any
        # process (from then on the dispatcher catches it and exits 0): wait for its start
        await self.wait_ready(10)
        self.stopping = True
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.popen.poll() is None:
                self.killed_m = time.monotonic()
                self.popen.kill()
                self.popen.wait(10)
        self.ended_m = self.ended_m or time.monotonic()


# --- the driver -----------------------------------------------------------------------------


@dataclass
class Root:
    id: uuid.UUID
    kind: str
    spec: dict[str, Any]
    cancel_delay: float | None = None
    started: bool = False
    cancel: dict[str, Any] | None = None     # {"cancelled": n, "status_before": s}
    snapshot: dict[str, int] | None = None   # run id -> last seq right after the cancel
    race: dict[str, Any] | None = None       # {"true": n, "errors": n}


class _LogCounter(logging.Handler):
    """The driver's own durable log lines, to a file (and scanned for deadlocks)."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.f = open(path, "a")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.f.write(self.format(record) + "\n")
            if record.exc_info:
                self.f.write("".join(traceback.format_exception(*record.exc_info)))
            self.f.flush()
        except Exception:
            pass

    def close(self) -> None:
        self.f.close()
        super().close()


class Soak:
    def __init__(self, cfg: Config, dsn: str, schema: str, folder: Path) -> None:
        self.cfg = cfg
        self.dsn = dsn
        self.schema = schema
        self.folder = folder
        (folder / "steps").mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex[:8]
        self.rng = random.Random(cfg.seed)
        self.procs: list[Dispatcher] = []
        self.faults = {"sigkill": 0, "terminate_backend": 0, "pg_restart": 0}
        self.driver_errors: list[str] = []
        self.roots: list[Root] = []
        self.stop_faults = asyncio.Event()
        self.recovery_s: float | None = None
        self.restart_m: float | None = None
        self.restart_baseline: int | None = None
        self.terminal_runs = 0
        self.t0 = time.monotonic()
        self.admin: Any = None
        self.client: durable.Engine | None = None
        self.deadline_m = 0.0

    # --- plumbing ---------------------------------------------------------------------------

    def dispatcher_app(self, n: int) -> str:
        return f"soak_{self.tag}_d{n}"

    async def query(self, sql: str, params: Any = None, *, fetch: str = "all", budget: float = 60.0) -> Any:
        """A statement on the driver's own connection (application_name soak_<tag>_admin),
        reconnecting through terminations and restarts for up to ``budget`` seconds."""
        end = time.monotonic() + budget
        while True:
            try:
                if self.admin is None or self.admin.closed:
                    self.admin = await connect(with_app_name(self.dsn, f"soak_{self.tag}_admin"), schema=self.schema,
                                               timeout=5)
                cur = await asyncio.wait_for(self.admin.execute(sql, params), 30)
                if fetch == "none":
                    return None
                return await (cur.fetchone() if fetch == "one" else cur.fetchall())
            except (psycopg.OperationalError, psycopg.InterfaceError, durable.DatabaseUnavailableError,
                    asyncio.TimeoutError) as exc:
                if self.admin is not None:
                    try:
                        await self.admin.close()
                    except Exception:
                        pass
                self.admin = None
                if time.monotonic() > end:
                    raise RuntimeError(f"driver query failed for {budget} s: {exc}") from exc
                await asyncio.sleep(0.2)

    async def retrying(self, what: str, fn: Callable[[], Awaitable[Any]], errors: list[int] | None = None) -> Any:
        """``fn()`` retried through database faults until the deadline; None if it never worked."""
        last: BaseException | None = None
        while time.monotonic() < self.deadline_m:
            try:
                return await asyncio.wait_for(fn(), 15)
            except (psycopg.Error, durable.DatabaseUnavailableError, asyncio.TimeoutError, OSError) as exc:
                logging.getLogger("durable.soak").info("%s failed, retrying: %r", what, exc)
                if errors is not None:
                    errors.append(1)
                last = exc
                await asyncio.sleep(0.2 + self.rng.random() * 0.3)
            except Exception as exc:  # psycopg_pool.PoolTimeout and the like
                if type(exc).__name__ not in ("PoolTimeout", "PoolClosed"):
                    raise
                if errors is not None:
                    errors.append(1)
                last = exc
                await asyncio.sleep(0.2)
        self.driver_errors.append(f"{what}: gave up at the deadline ({last!r})")
        return None

    def spawn(self) -> Dispatcher:
        n = len(self.procs)
        d = Dispatcher(n, self.dsn, self.schema, self.folder, self.dispatcher_app(n), self.cfg)
        self.procs.append(d)
        return d

    # --- the plan ---------------------------------------------------------------------------

    def plan(self) -> None:
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        for i in range(self.cfg.roots):
            kind = kinds[i] if i < len(kinds) else self.rng.choices(kinds, weights)[0]
            seed = self.rng.randrange(1 << 30)
            spec = wf.root_input(kind, seed, catch=self.rng.random() < 0.6, links=self.rng.randint(3, 5))
            r = Root(uuid.uuid4(), kind, spec)
            if kind == "hold":
                r.cancel_delay = self.rng.uniform(0.3, 2.0)
            elif kind == "tree" and self.rng.random() < RACE_CANCEL_FRACTION:
                r.cancel_delay = self.rng.uniform(0.0, 2.5)
            self.roots.append(r)

    # --- driving ----------------------------------------------------------------------------

    async def start_roots(self) -> None:
        tasks = []
        n = len(self.roots)
        for i, r in enumerate(self.roots):
            at = self.t0_start + self.cfg.start_window_s * i / max(1, n)
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.start_one(r)))
        await asyncio.gather(*tasks)

    async def start_one(self, r: Root) -> None:
        try:
            await self._start_one(r)
        except Exception as exc:
            self.driver_errors.append(f"{r.kind} root {r.id}: {exc!r}")

    async def _start_one(self, r: Root) -> None:
        assert self.client is not None
        h = await self.retrying(f"start {r.kind} {r.id}",
                                lambda: self.client.start(wf.WORKFLOW_OF[r.kind], r.spec, id=r.id))
        if h is None:
            return
        r.started = True
        subtasks = []
        if r.kind == "signals":
            subtasks.append(self.race_signal(r))
        if r.cancel_delay is not None:
            subtasks.append(self.cancel_root(r))
        await asyncio.gather(*subtasks)

    async def race_signal(self, r: Root) -> None:
        """The same delivery id sent RACED_SENDS times at once: exactly one True."""
        assert self.client is not None
        await asyncio.sleep(self.rng.uniform(0.05, 1.0))
        payload = wf.ext_payload(r.spec["seed"])
        errors: list[int] = []
        t_send = time.monotonic()

        async def send() -> bool | None:
            try:
                return await self.retrying(f"signal {r.id}", lambda: self.client.signal(
                    r.id, "ext", payload, delivery_id=f"ext-{r.id}"), errors)
            except durable.RunFinishedError:
                return None  # the root already failed; its result says so

        got = await asyncio.gather(*(send() for _ in range(RACED_SENDS)))
        r.race = {"true": sum(1 for g in got if g is True), "false": sum(1 for g in got if g is False),
                  "errors": len(errors), "finished": sum(1 for g in got if g is None),
                  "send_s": round(time.monotonic() - t_send, 3)}

    async def cancel_root(self, r: Root) -> None:
        assert self.client is not None
        await asyncio.sleep(r.cancel_delay or 0)
        res = await self.retrying(f"cancel {r.id}", lambda: self.client.cancel(r.id))
        if res is None:
            return
        r.cancel = {"cancelled": int(res), "status_before": res.status_before}
        if int(res):
            rows = await self.query(
                "SELECT r.id, coalesce(max(e.seq), 0) FROM durable_runs r LEFT JOIN durable_events e "
                "ON e.tree_key = r.tree_key AND e.run_id = r.id WHERE r.tree_key = %s AND r.root_id = %s "
                "GROUP BY r.id", (tree_key_of(r.id), r.id))
            r.snapshot = {str(i): s for i, s in rows}

    async def monitor(self) -> None:
        """Terminal counts every 0.25 s (and the recovery after a PG restart)."""
        last_report = 0.0
        while True:
            try:
                row = await self.query(
                    "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled', 'continued')), "
                    "count(*) FROM durable_runs", fetch="one", budget=5)
            except RuntimeError:
                await asyncio.sleep(0.25)
                continue
            now = time.monotonic()
            self.terminal_runs = row[0]
            if self.restart_m is not None and self.recovery_s is None:
                if self.restart_baseline is None:
                    self.restart_baseline = row[0]
                elif row[0] > self.restart_baseline:
                    self.recovery_s = round(now - self.restart_m, 3)
                    progress(f"completions resumed {self.recovery_s:.2f} s after the PostgreSQL restart")
            if now - last_report > 5:
                last_report = now
                alive = sum(p.alive() for p in self.procs)
                progress(f"t={now - self.t0:5.1f}s runs {row[0]}/{row[1]} terminal, roots started "
                         f"{sum(r.started for r in self.roots)}/{len(self.roots)}, dispatchers alive {alive}, "
                         f"faults {self.faults}")
            await asyncio.sleep(0.25)

    async def roots_terminal(self) -> int:
        ids = [r.id for r in self.roots if r.started]
        row = await self.query("SELECT count(DISTINCT chain_root_id) FROM durable_runs WHERE chain_root_id = ANY(%s) "
                               "AND status IN ('completed', 'failed', 'cancelled')", (ids,), fetch="one", budget=10)
        return row[0]

    # --- faults -----------------------------------------------------------------------------

    async def killer(self) -> None:
        while not self.stop_faults.is_set():
            await self._pause(self.cfg.kill_every_s * self.rng.uniform(0.7, 1.3))
            if self.stop_faults.is_set():
                return
            ready = [p for p in self.procs if p.alive() and not p.stopping and p.is_ready()]
            if not ready:
                continue
            victim = self.rng.choice(ready)
            victim.kill()
            self.faults["sigkill"] += 1
            fresh = self.spawn()
            asyncio.create_task(fresh.wait_ready(60))

    async def terminator(self) -> None:
        like = f"soak_{self.tag}_d%"
        while not self.stop_faults.is_set():
            await self._pause(self.cfg.term_every_s * self.rng.uniform(0.6, 1.4))
            if self.stop_faults.is_set():
                return
            try:
                rows = await self.query(
                    "SELECT pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity "
                    "WHERE application_name LIKE %s AND pid <> pg_backend_pid() ORDER BY random() LIMIT %s) s",
                    (like, self.cfg.term_per_round), budget=5)
            except (RuntimeError, psycopg.Error):
                continue
            self.faults["terminate_backend"] += sum(1 for (ok,) in rows if ok)

    async def pg_restarter(self) -> None:
        await self._pause(self.cfg.start_window_s * 0.5)
        if self.stop_faults.is_set():
            return
        cmd = os.environ.get("BENCH_PG_RESTART")  # a shell command; default: pg_ctlcluster below
        if not cmd:
            versions = sorted((v for v in os.listdir("/etc/postgresql") if v.replace(".", "").isdigit()),
                              key=lambda v: [int(x) for x in v.split(".")]) if os.path.isdir("/etc/postgresql") else []
            if not versions:
                self.driver_errors.append("pg_restart: no cluster in /etc/postgresql")
                return
            cmd = shlex.join(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"])
        progress(f"restarting PostgreSQL: {cmd}")
        self.restart_m = time.monotonic()
        proc = await asyncio.create_subprocess_shell(cmd, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        took = time.monotonic() - self.restart_m
        self.restart_baseline = None  # the monitor's first read after the restart is the baseline
        if proc.returncode != 0:
            self.driver_errors.append(f"pg_restart failed ({proc.returncode}): {out.decode()[-500:]}")
            self.restart_m = None
            return
        self.faults["pg_restart"] += 1
        progress(f"PostgreSQL restarted ({took:.2f} s)")

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop_faults.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # --- the whole run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.plan()
        dlog = logging.getLogger("durable")
        handler = _LogCounter(self.folder / "driver.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        dlog.addHandler(handler)
        old_level = dlog.level
        if dlog.getEffectiveLevel() > logging.INFO:
            dlog.setLevel(logging.INFO)
        try:
            return await self._run()
        finally:
            dlog.removeHandler(handler)
            dlog.setLevel(old_level)
            handler.close()
            for p in self.procs:
                if p.alive():
                    p.popen.kill()
                    p.popen.wait(10)
            if self.admin is not None:
                try:
                    await self.admin.close()
                except Exception:
                    pass

    async def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        first = [self.spawn() for _ in range(cfg.dispatchers)]
        ok = await asyncio.gather(*(p.wait_ready(60) for p in first))
        if not all(ok):
            raise RuntimeError(f"dispatchers did not start: {[p.log.read_text()[-2000:] for p in first]}")
        progress(f"{cfg.dispatchers} dispatchers ready; {len(self.roots)} roots "
                 f"({dict(Counter(r.kind for r in self.roots))}), "
                 f"{sum(r.cancel_delay is not None for r in self.roots)} to cancel")
        self.t0_start = time.monotonic()
        self.deadline_m = self.t0_start + cfg.deadline_s
        self.client = durable.Engine(with_app_name(self.dsn, f"soak_{self.tag}_client"), schema=self.schema,
                                     execute=False, pool_size=8, connect_timeout_s=5)
        await self.client.open()
        monitor = asyncio.create_task(self.monitor())
        faults = [asyncio.create_task(self.killer()), asyncio.create_task(self.terminator())]
        if cfg.pg_restart:
            faults.append(asyncio.create_task(self.pg_restarter()))
        starter = asyncio.create_task(self.start_roots())
        done_at = None
        try:
            while time.monotonic() < self.deadline_m:
                await asyncio.sleep(0.5)
                if not starter.done():
                    continue
                try:
                    if await self.roots_terminal() >= sum(r.started for r in self.roots):
                        done_at = time.monotonic()
                        break
                except RuntimeError:
                    continue
        finally:
            self.stop_faults.set()
            progress("all roots terminal" if done_at else f"deadline of {cfg.deadline_s} s reached")
            for t in faults:
                try:
                    await asyncio.wait_for(t, 150)
                except Exception as exc:
                    self.driver_errors.append(f"fault task: {exc!r}")
            if not starter.done():
                starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
            await asyncio.gather(*(p.stop() for p in self.procs if p.alive()))
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
            try:
                await asyncio.wait_for(self.client.close(grace=1), 20)
            except Exception:
                pass
        run_s = (done_at or time.monotonic()) - self.t0_start
        progress(f"runs finished in {run_s:.1f} s; checking invariants")
        out = await soak_check.check(self.query, self.roots, self.procs, self.folder, self.driver_errors)
        out.update(faults=dict(self.faults), recovery_s_after_pg_restart=self.recovery_s, run_s=round(run_s, 2))
        return out


# --- entry points ---------------------------------------------------------------------------


async def run(*, short: bool = False, pg_restart: bool | None = None, dsn: str | None = None,
              schema: str | None = None, roots: int | None = None, dispatchers: int | None = None,
              seed: int | None = None, deadline_s: float | None = None, keep: bool = False) -> dict[str, Any]:
    """Run the soak and return its figures (the bench's last JSON line). ``schema`` given:
    use that (migrated) schema and leave it; otherwise a fresh ``bench_soak_<hex>`` is
    created and dropped (unless ``keep``)."""
    t0 = time.monotonic()
    kw = {"roots": roots, "dispatchers": dispatchers, "deadline_s": deadline_s,
          "seed": seed if seed is not None else random.randrange(1 << 30), "keep": keep}
    if pg_restart is not None:
        kw["pg_restart"] = pg_restart
    cfg = Config.short(**kw) if short else Config(**{k: v for k, v in kw.items() if v is not None})
    dsn = dsn or await resolve_dsn()
    own_schema = schema is None
    if own_schema:
        schema = await make_schema(dsn, "soak")
    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    progress(f"database {masked(dsn)}, schema {schema}, folder {folder}, seed {cfg.seed}, "
             f"pg_restart {'on' if cfg.pg_restart else 'off'}")
    try:
        out = await Soak(cfg, dsn, schema, folder).run()  # type: ignore[arg-type]
    finally:
        if own_schema and not keep:
            try:
                await drop_schema(dsn, schema)  # type: ignore[arg-type]
            except Exception as exc:
                progress(f"could not drop schema {schema}: {exc}")
        if not keep and not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            progress(f"kept logs and step records in {folder}")
    figures = {"runs": out.pop("runs"), "faults": out.pop("faults"), "violations": out.pop("violations"),
               "reexecuted_steps": out.pop("reexecuted_steps"),
               "recovery_s_after_pg_restart": out.pop("recovery_s_after_pg_restart"),
               "s": round(time.monotonic() - t0, 2)}
    figures.update(out)
    figures["seed"] = cfg.seed
    return figures


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="the test-suite variant (a few dozen trees, no PG restart)")
    p.add_argument("--pg-restart", dest="pg_restart", action="store_true", default=None,
                   help="restart the PostgreSQL server once midway (default on, off with --short)")
    p.add_argument("--no-pg-restart", dest="pg_restart", action="store_false")
    p.add_argument("--roots", type=int)
    p.add_argument("--dispatchers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--deadline", type=float, dest="deadline_s")
    p.add_argument("--keep", action="store_true", help="keep the schema and the folder of logs/step records")
    a = p.parse_args()
    try:
        figures = asyncio.run(run(short=a.short, pg_restart=a.pg_restart, roots=a.roots, dispatchers=a.dispatchers,
                                  seed=a.seed, deadline_s=a.deadline_s, keep=a.keep))
    except KeyboardInterrupt:
        sys.exit(130)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
