"""The soak's invariant checker: after bench/soak.py has driven the soak and stopped its
dispatchers, :func:`check` reads the schema's tables, the per-process step-execution records
(``<folder>/steps/<pid>.jsonl``, written by the steps of bench/soak_workflows.py), the logs
(``<folder>/*.log``) and what the driver recorded of each root (its cancel, the last seqs
right after that cancel, its raced sends) and of each dispatcher process (pid, kill time,
exit), and returns the violations and details of the soak's report. Violations, all reported
(0 when none):

- ``not_terminal``: a root (the last link of its continue-as-new chain) not completed /
  failed / cancelled by the deadline
- ``wrong_result``: a terminal root with another status or result than expected (cancelled
  roots: cancelled; a racing cancel that found the root finished: its normal outcome)
- ``nondeterminism``: runs that failed with NonDeterminismError (any run of the schema)
- ``journal_gap``: runs whose journal seqs are not exactly 1..N
- ``duplicate_child_start``: a (parent, child id) journaled child_started more than once
- ``child_start_mismatch``: a child_started event without a run of that id under that parent
- ``overlapping_execution``: two step executions of one run by different processes that
  overlap in time (a SIGKILLed process's unfinished step ends at its kill time)
- ``journaled_after_cancel``: events of a cancelled run journaled after the cancel: seq
  above the run's last seq read right after ``engine.cancel`` returned (trees the driver
  cancelled), else ``created_at`` more than 1 s after ``finished_at`` (database clock)
- ``reexecuted_after_journaled``: a step execution (run, position, attempt) that started
  after that attempt's outcome (step_completed / step_failed / a step_retry of that or a
  later attempt) had been journaled (``created_at``, the database's clock on this host,
  before the execution's wall-clock start); other re-executions are at-least-once and
  only counted (``reexecuted_steps``, ``executions_per_step``)
- ``duplicate_delivery``: the raced sends of one delivery id did not return exactly one
  True (at most one when some send failed and was retried), or stored it twice
- ``deadlock``: 'deadlock detected' / 'DeadlockDetected' in any dispatcher log or the
  driver's log
- ``unexpected_exit``: a dispatcher that exited without being killed
- ``driver_error``: a start / signal / cancel the driver could not complete before the
  deadline

Details (not violations): ``runs``, ``roots``, ``roots_by_status``, ``wrong_by_kind``,
``reexecuted_steps``, ``executions_per_step``, ``step_executions``, ``dispatchers_spawned``,
``ext_send_max_s`` (the raced sends of one delivery id), ``ext_signal_to_consumed_max_s``.
Up to 5 samples of each violation kind are printed as progress lines.
"""

from __future__ import annotations

import glob
import json
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, Sequence

from bench import soak_workflows as wf
from bench.common import progress
from durable.store.rows import tree_key_of

VIOLATION_KINDS = (
    "not_terminal", "wrong_result", "nondeterminism", "journal_gap", "duplicate_child_start",
    "child_start_mismatch", "overlapping_execution", "journaled_after_cancel", "reexecuted_after_journaled",
    "duplicate_delivery", "deadlock", "unexpected_exit", "driver_error",
)
TERMINAL = ("completed", "failed", "cancelled")
DEADLOCK_MARKERS = ("deadlock detected", "DeadlockDetected")
JOURNAL_EPS_S = 0.005      # wall clock vs the database's now() on one host

# ``query(sql, params=None, *, fetch="all" | "one" | "none")``: a statement in the soak's schema
Query = Callable[..., Awaitable[Any]]


class RootRecord(Protocol):
    """What the driver did to one root (bench.soak.Root)."""

    id: uuid.UUID
    kind: str
    spec: dict[str, Any]
    cancel_delay: float | None
    started: bool
    cancel: dict[str, Any] | None     # {"cancelled": n, "status_before": s}
    snapshot: dict[str, int] | None   # run id -> last seq right after the cancel
    race: dict[str, Any] | None       # {"true", "false", "errors", "finished", "send_s"}


class ProcessRecord(Protocol):
    """One dispatcher subprocess of the soak (bench.soak.Dispatcher)."""

    pid: int
    log: Path
    popen: subprocess.Popen[bytes]
    killed_m: float | None   # monotonic time of the driver's SIGKILL
    ended_m: float | None    # monotonic time the driver saw it gone
    stopping: bool           # the driver sent SIGTERM at the end


async def check(query: Query, roots: Sequence[RootRecord], procs: Sequence[ProcessRecord], folder: Path,
                driver_errors: Sequence[str]) -> dict[str, Any]:
    """Every invariant of the module docstring over the finished soak: ``violations`` (every
    kind of VIOLATION_KINDS) and the details, as the report's keys."""
    v: dict[str, int] = {k: 0 for k in VIOLATION_KINDS}
    samples: dict[str, list[Any]] = defaultdict(list)

    def flag(kind: str, n: int = 1, sample: Any = None) -> None:
        v[kind] += n
        if sample is not None and len(samples[kind]) < 5:
            samples[kind].append(sample)

    # roots: every root terminal, with the right outcome
    ids = [r.id for r in roots]
    rows = await query("SELECT chain_root_id, id, status, result, error FROM durable_runs "
                       "WHERE chain_root_id = ANY(%s) AND status <> 'continued'", (ids,))
    links: dict[uuid.UUID, list[tuple]] = defaultdict(list)
    for cid, rid, status, result, error in rows:
        links[cid].append((rid, status, result, error))
    by_status: Counter[str] = Counter()
    wrong_by_kind: Counter[str] = Counter()
    for r in roots:
        if not r.started:
            by_status["not_started"] += 1
            flag("not_terminal", sample={"root": str(r.id), "kind": r.kind, "status": "not started"})
            continue
        ls = links.get(r.id, [])
        final = [x for x in ls if x[1] in TERMINAL]
        if len(ls) != 1 or not final:
            status = ",".join(x[1] for x in ls) or "missing"
            by_status[status] += 1
            tree = await query("SELECT workflow || ':' || status, count(*) FROM durable_runs "
                               "WHERE root_id = %s GROUP BY 1", (r.id,))
            flag("not_terminal", sample={"root": str(r.id), "kind": r.kind, "status": status,
                                         "tree": dict(tree)})
            continue
        _, status, result, error = final[0]
        by_status[status] += 1
        want = wf.expected(r.kind, r.spec)
        if r.cancel is not None and (r.cancel["cancelled"] or r.cancel["status_before"] == "cancelled"):
            want = ("cancelled", None)
        if r.cancel is None and r.cancel_delay is not None and r.kind != "hold":
            want = None  # the racing cancel never got through: either outcome is right
        got_ok = (status == want[0] and (
            status == "cancelled" or (status == "completed" and result == want[1]) or
            (status == "failed" and (error or {}).get("type") == want[1]))) if want else status in TERMINAL
        if not got_ok:
            wrong_by_kind[r.kind] += 1
            flag("wrong_result", sample={"root": str(r.id), "kind": r.kind, "want": want, "status": status,
                                         "result": result, "error": _short_error(error)})

    nd = await query("SELECT id, workflow, error->>'message' FROM durable_runs "
                     "WHERE status = 'failed' AND error->>'type' = 'NonDeterminismError'")
    for rid, workflow, msg in nd:
        flag("nondeterminism", sample={"run": str(rid), "workflow": workflow, "message": (msg or "")[:300]})

    # journals: seq 1..N without gaps or duplicates
    gaps = await query("SELECT run_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM durable_events "
                       "GROUP BY run_id HAVING min(seq) <> 1 OR max(seq) <> count(*) "
                       "OR count(DISTINCT seq) <> count(*)")
    for rid, n, nd_, lo, hi in gaps:
        info = await query(
            "SELECT r.workflow, r.status, array(SELECT g FROM generate_series(1, %s) g WHERE g NOT IN "
            "(SELECT seq FROM durable_events e WHERE e.tree_key = r.tree_key AND e.run_id = r.id)) "
            "FROM durable_runs r WHERE r.tree_key = %s AND r.id = %s", (hi, tree_key_of(rid), rid), fetch="one")
        flag("journal_gap", sample={"run": str(rid), "events": n, "min": lo, "max": hi,
                                    "workflow": info and info[0], "status": info and info[1],
                                    "missing_seqs": info and info[2][:10]})

    # children: one child_started per (parent, child id), each with its run row
    dups = await query("SELECT run_id, data->>'child_id', count(*) FROM durable_events "
                       "WHERE kind = 'child_started' GROUP BY 1, 2 HAVING count(*) > 1")
    for parent, child, n in dups:
        flag("duplicate_child_start", sample={"parent": str(parent), "child": child, "times": n})
    orphans = await query(
        "SELECT e.run_id, e.data->>'child_id' FROM durable_events e LEFT JOIN durable_runs c "
        "ON c.tree_key = e.tree_key AND c.id = (e.data->>'child_id')::uuid AND c.parent_id = e.run_id "
        "WHERE e.kind = 'child_started' AND c.id IS NULL")
    for parent, child in orphans:
        flag("child_start_mismatch", sample={"parent": str(parent), "child": child})

    # nothing journaled to a cancelled run after the cancel
    cancelled = await query(
        "SELECT r.id, r.root_id, count(e.seq) FILTER (WHERE e.created_at > r.finished_at + interval '1 second'), "
        "coalesce(max(e.seq), 0) FROM durable_runs r LEFT JOIN durable_events e "
        "ON e.tree_key = r.tree_key AND e.run_id = r.id "
        "WHERE r.status = 'cancelled' GROUP BY r.tree_key, r.id, r.root_id")
    snaps = {r.id: r.snapshot for r in roots if r.snapshot is not None}
    for rid, root_id, late, max_seq in cancelled:
        snap = snaps.get(root_id)
        if snap is not None:
            before = snap.get(str(rid), 0)  # a run absent from the snapshot was created after it
            n = max(0, max_seq - before)
        else:
            n = late
        if n:
            flag("journaled_after_cancel", n, sample={"run": str(rid), "events_after": n})

    # step executions: overlaps across processes, and re-executions
    records = step_records(folder)
    starts, ends = records
    end_of_pid = {p.pid: (p.killed_m if p.killed_m is not None else p.ended_m) for p in procs}
    now_m = time.monotonic()
    intervals: dict[str, list[tuple[float, float, int, int, str]]] = defaultdict(list)
    for key, s in starts.items():
        e = ends.get(key)
        end = e["m"] if e is not None else (end_of_pid.get(s["pid"]) or now_m)
        intervals[s["run"]].append((s["m"], end, s["pid"], s["pos"], s["name"]))
    for run, ivs in intervals.items():
        ivs.sort()
        for i, a in enumerate(ivs):
            for b in ivs[i + 1:]:
                if b[0] >= a[1]:
                    break
                if b[2] != a[2]:
                    flag("overlapping_execution", sample={"run": run, "a": [a[2], a[3], a[4]],
                                                          "b": [b[2], b[3], b[4]],
                                                          "overlap_s": round(a[1] - b[0], 4)})
    execs: Counter[tuple[str, int, int]] = Counter((s["run"], s["pos"], s["attempt"]) for s in starts.values())
    reexecuted = sum(n - 1 for n in execs.values() if n > 1)
    dist = Counter(execs.values())
    has_op = await query("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                         "AND table_name = 'durable_events' AND column_name = 'op'", fetch="one")
    key_sql = "CASE WHEN pos IS NOT NULL THEN pos::text ELSE op END" if has_op else "pos::text"
    outcomes = await query(
        f"SELECT run_id::text, {key_sql}, kind, coalesce((data->>'attempt')::int, 0), "
        "extract(epoch FROM created_at)::float8 FROM durable_events "
        "WHERE kind IN ('step_completed', 'step_failed', 'step_retry')")
    journaled: dict[tuple[str, int], list[tuple[str, int, float]]] = defaultdict(list)
    for run, pos, kind, attempt, at in outcomes:
        journaled[(run, pos)].append((kind, attempt, at))
    for s in starts.values():
        for kind, attempt, at in journaled.get((s["run"], str(s["pos"])), ()):
            covers = kind in ("step_completed", "step_failed") or attempt >= s["attempt"]
            if covers and at < s["t"] - JOURNAL_EPS_S:
                flag("reexecuted_after_journaled",
                     sample={"run": s["run"], "pos": s["pos"], "step": s["name"], "attempt": s["attempt"],
                             "pid": s["pid"], "journaled": kind, "started_after_s": round(s["t"] - at, 4)})
                break

    # signals: raced deliveries
    for r in roots:
        if r.race is None:
            continue
        strict = r.race["errors"] == 0 and r.race["finished"] == 0
        if (strict and r.race["true"] != 1) or r.race["true"] > 1:
            flag("duplicate_delivery", sample={"root": str(r.id), **r.race})
    stored = await query("SELECT run_id, delivery_id, count(*) FROM durable_signals "
                         "WHERE delivery_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1")
    for rid, did, n in stored:
        flag("duplicate_delivery", sample={"run": str(rid), "delivery_id": did, "stored": n})

    # logs: deadlocks, and dispatchers that died on their own
    for path in sorted(folder.glob("*.log")):
        text = path.read_text(errors="replace")
        hits = [ln for ln in text.splitlines() if any(m in ln for m in DEADLOCK_MARKERS)]
        if hits:  # one per log line (a line may carry both markers)
            flag("deadlock", len(hits), sample={"log": path.name, "lines": len(hits), "line": hits[0][:300]})
    for p in procs:
        code = p.popen.returncode
        if p.killed_m is None and not p.stopping:
            flag("unexpected_exit", sample={"log": p.log.name, "code": code})
        elif p.stopping and p.killed_m is None and code not in (0, None):
            flag("unexpected_exit", sample={"log": p.log.name, "code": code, "at": "SIGTERM"})
    for msg in driver_errors:
        flag("driver_error", sample=msg[:300])

    runs = (await query("SELECT count(*) FROM durable_runs", fetch="one"))[0]
    # diagnostics (not violations): how long the driver's raced sends took, and from a
    # stored "ext" signal to the waiting root consuming it
    wake = await query(
        "SELECT max(extract(epoch FROM e.created_at - s.created_at))::float8 FROM durable_signals s "
        "JOIN durable_events e ON e.tree_key = s.tree_key AND e.run_id = s.run_id AND e.seq = s.consumed_seq "
        "WHERE s.name = 'ext'", fetch="one")
    sends = [r.race["send_s"] for r in roots if r.race]
    for kind, ss in samples.items():
        for s in ss:
            progress(f"violation {kind}: {json.dumps(s, default=str)[:600]}")
    return {"runs": runs, "roots": len(roots), "roots_by_status": dict(by_status),
            "wrong_by_kind": dict(wrong_by_kind), "violations": v,
            "reexecuted_steps": reexecuted,
            "executions_per_step": {str(k): n for k, n in sorted(dist.items())},
            "step_executions": len(starts),
            "dispatchers_spawned": len(procs),
            "ext_send_max_s": max(sends) if sends else None,
            "ext_signal_to_consumed_max_s": None if wake[0] is None else round(wake[0], 3)}


def step_records(folder: Path) -> tuple[dict[tuple, dict[str, Any]], dict[tuple, dict[str, Any]]]:
    """Start and end records keyed by (pid, run, pos, attempt, start monotonic)."""
    starts: dict[tuple, dict[str, Any]] = {}
    ends: dict[tuple, dict[str, Any]] = {}
    for path in glob.glob(str(folder / "steps" / "*.jsonl")):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by SIGKILL
                if rec["ev"] == "start":
                    starts[(rec["pid"], rec["run"], rec["pos"], rec["attempt"], rec["m"])] = rec
                else:
                    ends[(rec["pid"], rec["run"], rec["pos"], rec["attempt"], rec["m0"])] = rec
    return starts, ends


def _short_error(error: Any) -> Any:
    if not isinstance(error, dict):
        return error
    return {"type": error.get("type"), "message": (error.get("message") or "")[:300]}
