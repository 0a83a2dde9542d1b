"""Metrics (durable.metrics) and the Grafana dashboard (grafana/) agree and work.

* every metric name a dashboard query uses is exported by the code;
* the dashboard JSON is structurally valid for the schema version it declares (39);
* hook events move the right metrics, and bad events or broken hooks never break them;
* the metrics HTTP server serves /metrics and extra routes, and reports a busy port clearly.

No database here (the queue collector's names are read from describe(), which does not
connect); the collector against a real database: tests/integration/test_metrics_queue_collector.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterator

import pytest
from prometheus_client import CollectorRegistry

from durable.observe import hooks, metrics
from durable.errors import ConfigurationError
from helpers import ROOT

DASHBOARD = ROOT / "grafana" / "dashboards" / "durable.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
TEST_DSN = os.environ.get("DURABLE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


# --- helpers -----------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        return json.load(f)


def dashboard_queries(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries."""
    exprs: list[str] = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if target.get("expr"):
                exprs.append(target["expr"])
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
            if var.get("definition"):
                exprs.append(var["definition"])
    return exprs


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


_EXPORTED_PREFIXES = ("durable_", "process_", "python_")


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects (identifiers starting with durable_, or the
    process_/python_ series of the process collectors served next to them)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    return {name for name in _IDENT.findall(text) if name.startswith(_EXPORTED_PREFIXES)}


def series_names(families: Any) -> set[str]:
    """The sample names Prometheus sees for these metric families (by family type)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "info": ("_info",),
        "gauge": ("",),
        "unknown": ("",),
        "stateset": ("",),
    }
    names: set[str] = set()
    for family in families:
        names.update(family.name + s for s in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def exported_names() -> set[str]:
    """What /metrics serves: durable's registry, the process collectors, the queue collector."""
    metrics.install()
    names = series_names(metrics.SERVED_REGISTRY.collect())
    names |= series_names(metrics.QueueCollector(TEST_DSN, "unused").describe())
    return names


def value(name: str, **labels: str) -> float:
    v = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


@pytest.fixture
def wf() -> str:
    """A workflow label unique to one test, so shared counters can be read absolutely."""
    return f"wf_{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _metrics_installed() -> Iterator[None]:
    metrics.install()
    yield
    metrics.install()


# --- (a) dashboard metric names are exported -----------------------------------------------


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, workflow) (rate('
            'durable_step_duration_seconds_bucket{workflow=~"durable_fake_x"}[$__rate_interval])))'
            ' / on() durable_runs_in_flight')
    assert metric_names_in(expr) == {"durable_step_duration_seconds_bucket", "durable_runs_in_flight"}
    assert metric_names_in("label_values(durable_runs_started_total, workflow)") == {
        "durable_runs_started_total"}


def test_every_dashboard_metric_is_exported() -> None:
    dash = load_dashboard()
    used: set[str] = set()
    for expr in dashboard_queries(dash):
        found = metric_names_in(expr)
        assert found, f"dashboard query selects no exported metric: {expr}"
        used |= found
    exported = exported_names()
    missing = sorted(used - exported)
    assert not missing, f"dashboard uses metrics the code does not export: {missing}"
    # The dashboard covers what the telemetry spec asks for.
    for required in (
        "durable_runs_finished_total", "durable_wake_latency_seconds_bucket",
        "durable_children_started_total", "durable_children_finished_total",
        "durable_queue_depth", "durable_queue_oldest_ready_seconds", "durable_lease_lost_total",
        "durable_runs_in_flight", "durable_step_duration_seconds_bucket", "durable_claims_total",
        "durable_runs_started_total", "durable_runs_requested_total", "durable_build_info",
        "durable_executions_ended_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
    ):
        assert required in used, f"dashboard does not show {required}"


def test_metric_naming_conventions() -> None:
    families = list(metrics.REGISTRY.collect())
    names = {f.name for f in families}
    assert {
        "durable_runs_started", "durable_runs_finished", "durable_run_duration_seconds",
        "durable_steps", "durable_step_duration_seconds", "durable_step_retries",
        "durable_children_started", "durable_children_finished", "durable_wake_latency_seconds",
        "durable_resume_latency_seconds",
        "durable_run_resumes", "durable_claims", "durable_claim_batch_size", "durable_lease_lost",
        "durable_heartbeats", "durable_heartbeat_leases", "durable_wake_notifications",
        "durable_wake_polls", "durable_runs_in_flight", "durable_cascade_cancelled",
        "durable_cascade_truncated",
    } <= names
    for family in families:
        assert family.name.startswith("durable_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # exposed as <name>_total
        if family.type == "histogram" and ("duration" in family.name or "latency" in family.name):
            assert family.name.endswith("_seconds"), family.name
    series = series_names(metrics.REGISTRY.collect())
    assert not any("run_id" in n for n in series)
    # The dedicated registry is not prometheus_client's global one.
    import prometheus_client

    assert metrics.REGISTRY is not prometheus_client.REGISTRY


def test_queue_collector_describe_matches_names() -> None:
    names = {f.name for f in metrics.QueueCollector(TEST_DSN, "x").describe()}
    assert names == {"durable_queue_depth", "durable_queue_oldest_ready_seconds", "durable_runs_waiting"}


# --- (b) dashboard structure ---------------------------------------------------------------

PANEL_TYPES_V39 = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row", "heatmap",
                   "piechart", "logs", "barchart", "state-timeline", "status-history"}


def _boxes_overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def _check_ds_ref(ref: Any, where: str) -> None:
    # Since schemaVersion 33 data source references are objects {type, uid}, not names.
    assert isinstance(ref, dict), f"{where}: datasource must be an object (schemaVersion >= 33)"
    assert ref.get("type") == "prometheus", where
    assert ref.get("uid") == "${datasource}", where


def test_dashboard_structure() -> None:
    dash = load_dashboard()
    assert dash["schemaVersion"] == 39
    assert isinstance(dash["title"], str) and dash["title"]
    assert isinstance(dash["uid"], str) and 0 < len(dash["uid"]) <= 40
    assert re.fullmatch(r"[A-Za-z0-9_-]+", dash["uid"])
    assert isinstance(dash["version"], int)
    assert isinstance(dash["editable"], bool)
    assert isinstance(dash["tags"], list)
    assert set(dash["time"]) >= {"from", "to"}
    assert re.fullmatch(r"\d+[smhd]", dash["refresh"])
    assert dash["graphTooltip"] in (0, 1, 2)
    assert "rows" not in dash, "pre-schema-16 'rows' layout is not valid at schemaVersion 39"
    for ann in dash["annotations"]["list"]:
        assert {"name", "datasource", "enable"} <= set(ann)

    panels = dash["panels"]
    assert len(panels) >= 10
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        assert p["type"] in PANEL_TYPES_V39, f"{where}: unknown panel type {p['type']}"
        assert p["type"] != "graph", f"{where}: 'graph' is deprecated; use timeseries"
        assert p["type"] in ("timeseries", "stat"), where
        assert isinstance(p["title"], str) and p["title"], where
        grid = p["gridPos"]
        assert set(grid) >= {"x", "y", "w", "h"}, where
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "xywh"), where
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= 24, where
        _check_ds_ref(p["datasource"], where)
        assert isinstance(p["fieldConfig"]["defaults"], dict), where
        assert isinstance(p["fieldConfig"]["overrides"], list), where
        assert isinstance(p["options"], dict), where
        targets = p["targets"]
        assert targets, f"{where}: no targets"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{where}: duplicate refIds"
        for t in targets:
            assert isinstance(t["refId"], str) and t["refId"], where
            assert isinstance(t["expr"], str) and t["expr"].strip(), where
            assert t["expr"].count("(") == t["expr"].count(")"), f"{where}: unbalanced {t['expr']}"
            assert t["expr"].count("{") == t["expr"].count("}"), f"{where}: unbalanced {t['expr']}"
            if "datasource" in t:
                _check_ds_ref(t["datasource"], where)
    for i, a in enumerate(panels):
        for b in panels[i + 1:]:
            assert not _boxes_overlap(a["gridPos"], b["gridPos"]), (a["title"], b["title"])

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for v in variables.values():
        assert {"name", "type"} <= set(v)
        if v["type"] == "query":
            _check_ds_ref(v["datasource"], f"variable {v['name']}")
    # Every $variable used in a query is defined (or a Grafana built-in).
    builtins = {"__rate_interval", "__interval", "__range", "__all"}
    for expr in dashboard_queries(dash):
        for var in re.findall(r"\$\{?(\w+)", expr):
            assert var in variables or var in builtins, f"undefined variable ${var} in {expr}"


def test_provisioning_files() -> None:
    dash_prov = (PROVISIONING / "dashboards" / "durable.yaml").read_text()
    ds_prov = (PROVISIONING / "datasources" / "prometheus.yaml").read_text()
    assert "apiVersion: 1" in dash_prov and "type: file" in dash_prov
    assert "path: /var/lib/grafana/dashboards" in dash_prov
    assert "apiVersion: 1" in ds_prov and "type: prometheus" in ds_prov
    assert "uid: prometheus" in ds_prov and "url: http://prometheus:9090" in ds_prov
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return
    assert yaml.safe_load(dash_prov)["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert yaml.safe_load(ds_prov)["datasources"][0]["uid"] == "prometheus"


# --- (c) hook events move metrics ----------------------------------------------------------


def began(wf: str, *, parent: object = None, queue: str = "default", attempt: int = 1, first: bool = True) -> None:
    """One execution of a run of ``wf`` (a child when ``parent`` is set) began and ended here."""
    run_id = uuid.uuid4()
    hooks.emit("execution.started", run_id=run_id, workflow=wf, queue=queue, attempt=attempt,
               parent_run_id=parent, first=first)
    hooks.emit("execution.ended", run_id=run_id, workflow=wf, reason="terminal")


def test_children_counters(wf: str) -> None:
    for i in range(3):
        hooks.emit("child.started", parent_run_id=uuid.uuid4(), child_run_id=uuid.uuid4(),
                   workflow=wf, parent_workflow="parent")  # created (here or elsewhere): not yet begun
    assert value("durable_children_started_total", workflow=wf) == 0
    for i in range(3):
        began(wf, parent=uuid.uuid4())  # begun here: counted where it executes
    began(wf, parent=uuid.uuid4(), first=False)  # a replay or resume: not a start
    began(wf, parent=uuid.uuid4(), attempt=2)  # a retry attempt: not a new run
    hooks.emit("child.completed", parent_run_id=1, child_run_id=2, workflow=wf)
    hooks.emit("child.failed", parent_run_id=1, child_run_id=3, workflow=wf, error_type="ValueError")
    hooks.emit("child.cancelled", parent_run_id=1, child_run_id=4, workflow=wf)
    hooks.emit("child.cancelled", parent_run_id=1, child_run_id=5, workflow=wf)
    assert value("durable_children_started_total", workflow=wf) == 3
    assert value("durable_children_finished_total", workflow=wf, outcome="completed") == 1
    assert value("durable_children_finished_total", workflow=wf, outcome="failed") == 1
    assert value("durable_children_finished_total", workflow=wf, outcome="cancelled") == 2


def test_child_outcomes_feed_wake_latency(wf: str) -> None:
    """One wake-latency observation per child outcome, labelled by the waiting parent's workflow."""
    hooks.emit("child.completed", parent_run_id=1, child_run_id=2, workflow="c", parent_workflow=wf,
               wake_latency_s=0.004)
    hooks.emit("child.failed", parent_run_id=1, child_run_id=3, workflow="c", parent_workflow=wf,
               wake_latency_s=0.2, error_type="E")
    hooks.emit("child.cancelled", parent_run_id=1, child_run_id=4, workflow="c", parent_workflow=wf,
               wake_latency_s=None)  # unknown latency: counted as an outcome, not observed
    assert value("durable_wake_latency_seconds_count", workflow=wf) == 2
    assert value("durable_wake_latency_seconds_bucket", workflow=wf, le="0.005") == 1
    assert value("durable_wake_latency_seconds_sum", workflow=wf) == pytest.approx(0.204)


def test_in_flight_excludes_parked_runs(wf: str) -> None:
    base = value("durable_runs_in_flight")
    a = uuid.uuid4()
    hooks.emit("execution.started", run_id=a, workflow=wf)
    hooks.emit("run.resumed", run_id=a, workflow=wf, source="start", wake_latency_s=None)
    assert value("durable_runs_in_flight") - base == 1
    hooks.emit("run.suspended", run_id=a, workflow=wf)  # parked in memory: not executing
    assert value("durable_runs_in_flight") == base
    hooks.emit("run.resumed", run_id=a, workflow=wf, source="notify", wake_latency_s=0.01)
    assert value("durable_runs_in_flight") - base == 1
    hooks.emit("execution.ended", run_id=a, workflow=wf, reason="terminal")
    assert value("durable_runs_in_flight") == base


def test_run_lifecycle_metrics(wf: str) -> None:
    hooks.emit("run.started", run_id=uuid.uuid4(), workflow=wf, queue="q1", parent_run_id=None)
    hooks.emit("run.started", run_id=uuid.uuid4(), workflow=wf, queue="q1", parent_run_id=None)
    assert value("durable_runs_requested_total", workflow=wf, queue="q1") == 2
    assert value("durable_runs_started_total", workflow=wf, queue="q1") == 0  # created, not begun
    began(wf, queue="q1")
    began(wf, queue="q1")
    began(wf, queue="q1", first=False)
    hooks.emit("run.completed", run_id=1, workflow=wf, queue="q1", duration_s=0.2)
    hooks.emit("run.failed", run_id=2, workflow=wf, queue="q1", duration_s=3.0, error_type="E")
    hooks.emit("run.cancelled", run_id=3, workflow=wf, queue="q1", reason="user")
    hooks.emit("run.continued", run_id=4, workflow=wf, queue="q1", successor_run_id=5)
    hooks.emit("run.suspended", run_id=4, workflow=wf)
    assert value("durable_runs_started_total", workflow=wf, queue="q1") == 2
    for outcome in ("completed", "failed", "cancelled", "continued"):
        assert value("durable_runs_finished_total", workflow=wf, queue="q1", outcome=outcome) == 1
    assert value("durable_run_duration_seconds_count", workflow=wf, outcome="completed") == 1
    assert value("durable_run_duration_seconds_sum", workflow=wf, outcome="failed") == 3.0
    assert value("durable_run_duration_seconds_bucket", workflow=wf, outcome="completed", le="0.25") == 1
    assert value("durable_run_suspensions_total", workflow=wf) == 1


def test_step_metrics(wf: str) -> None:
    hooks.emit("step.retried", run_id=1, workflow=wf, step="fetch", attempt=1, error_type="E", delay_s=1)
    hooks.emit("step.retried", run_id=1, workflow=wf, step="fetch", attempt=2, error_type="E", delay_s=2)
    hooks.emit("step.completed", run_id=1, workflow=wf, step="fetch", attempt=3, duration_s=0.004)
    hooks.emit("step.failed", run_id=1, workflow=wf, step="save", attempt=1, duration_s=0.5, error_type="E")
    assert value("durable_step_retries_total", workflow=wf, step="fetch") == 2
    assert value("durable_steps_total", workflow=wf, step="fetch", outcome="completed") == 1
    assert value("durable_steps_total", workflow=wf, step="save", outcome="failed") == 1
    assert value("durable_step_duration_seconds_count", workflow=wf, step="fetch") == 1
    assert value("durable_step_duration_seconds_bucket", workflow=wf, step="fetch", le="0.005") == 1


def test_engine_loop_metrics(wf: str) -> None:
    before = {name: value(name) for name in (
        "durable_claim_batch_size_count",
        "durable_heartbeats_total", "durable_heartbeat_leases_count", "durable_wake_notifications_total",
        "durable_wake_polls_total", "durable_cascade_cancelled_total", "durable_cascade_truncated_total")}
    notify_before = value("durable_run_resumes_total", source="notify")
    claims_before = value("durable_claims_total", source="poll")
    resume_before = value("durable_resume_latency_seconds_count", source="notify")
    fast_before = value("durable_resume_latency_seconds_bucket", source="notify", le="0.0025")

    hooks.emit("run.resumed", run_id=1, workflow=wf, source="notify", wake_latency_s=0.002)
    hooks.emit("run.resumed", run_id=2, workflow=wf, source="notify", wake_latency_s=None)
    hooks.emit("claim.batch", count=7, source="poll")
    hooks.emit("claim.batch", count=0, source="poll")
    hooks.emit("lease.lost", run_id=1, workflow=wf)
    hooks.emit("heartbeat", leases=12, lost=0)
    hooks.emit("wake.notification", channel="durable_wake_x")
    hooks.emit("wake.poll", count=3)
    hooks.emit("cascade.completed", run_id=1, cancelled=4)
    hooks.emit("cascade.truncated", run_id=1, depth_limit=10, truncated=True)

    # run.resumed feeds the resume latency (per resume), not the per-child wake latency
    assert value("durable_resume_latency_seconds_count", source="notify") - resume_before == 1
    assert value("durable_resume_latency_seconds_bucket", source="notify", le="0.0025") - fast_before == 1
    assert value("durable_wake_latency_seconds_count", workflow=wf) == 0
    assert value("durable_run_resumes_total", source="notify") - notify_before == 2
    assert value("durable_claims_total", source="poll") - claims_before == 7
    assert value("durable_claim_batch_size_count") - before["durable_claim_batch_size_count"] == 2
    assert value("durable_lease_lost_total", workflow=wf) == 1
    assert value("durable_heartbeats_total") - before["durable_heartbeats_total"] == 1
    assert value("durable_heartbeat_leases_count") - before["durable_heartbeat_leases_count"] == 1
    assert value("durable_wake_notifications_total") - before["durable_wake_notifications_total"] == 1
    assert value("durable_wake_polls_total") - before["durable_wake_polls_total"] == 1
    assert value("durable_cascade_cancelled_total") - before["durable_cascade_cancelled_total"] == 4
    assert value("durable_cascade_truncated_total") - before["durable_cascade_truncated_total"] == 1


def test_in_flight_gauge(wf: str) -> None:
    base = value("durable_runs_in_flight")
    a, b = uuid.uuid4(), uuid.uuid4()
    hooks.emit("execution.started", run_id=a, workflow=wf)
    hooks.emit("execution.started", run_id=b, workflow=wf)
    assert value("durable_runs_in_flight") - base == 2
    hooks.emit("execution.ended", run_id=a, workflow=wf, reason="suspended")
    hooks.emit("execution.ended", run_id=a, workflow=wf, reason="suspended")  # duplicate: no change
    hooks.emit("execution.ended", run_id=uuid.uuid4(), workflow=wf, reason="terminal")  # unknown run
    assert value("durable_runs_in_flight") - base == 1
    hooks.emit("execution.ended", run_id=b, workflow=wf, reason="terminal")
    assert value("durable_runs_in_flight") == base
    assert value("durable_executions_ended_total", reason="suspended") >= 2


def test_bad_events_never_raise(wf: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hooks.emit("child.started")  # every field missing
    hooks.emit("execution.started", first=True, parent_run_id=1)  # no run id, no workflow
    hooks.emit("execution.ended")
    hooks.emit("claim.batch")
    hooks.emit("claim.batch", count=-3, source="poll")
    hooks.emit("claim.batch", count="many", source="poll")
    hooks.emit("run.resumed", wake_latency_s=float("nan"))
    hooks.emit("run.resumed", wake_latency_s="soon", source=None)
    hooks.emit("step.completed", workflow=wf, step={"weird": "label"}, duration_s="abc")
    hooks.emit("heartbeat", leases=[1, 2])
    hooks.emit("execution.started", run_id=["unhashable"], workflow=wf)
    hooks.emit("execution.ended", run_id=["unhashable"], workflow=wf)
    hooks.emit("cascade.completed", cancelled=None)
    hooks.emit("not.an.event", anything=object())
    hooks.emit("run.completed", workflow=wf, queue="q", duration_s=-1.0)
    problems = [r for r in caplog.records
                if r.name in ("durable.hooks", "durable.metrics") and r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]
    assert value("durable_children_started_total", workflow="unknown") >= 1
    assert value("durable_steps_total", workflow=wf, step="{'weird': 'label'}", outcome="completed") == 1
    assert value("durable_runs_finished_total", workflow=wf, queue="q", outcome="completed") == 1
    assert value("durable_run_duration_seconds_count", workflow=wf, outcome="completed") == 0


def test_raising_handler_does_not_stop_metrics(wf: str) -> None:
    def boom(event: hooks.HookEvent) -> None:
        raise RuntimeError("broken user hook")

    metrics.uninstall()
    hooks.on("*", boom)  # attached before the metrics handler: runs first and raises
    try:
        metrics.install()
        for _ in range(3):
            began(wf, parent=1)
        assert value("durable_children_started_total", workflow=wf) == 3
    finally:
        hooks.off("*", boom)


def test_install_is_idempotent_and_uninstall_detaches(wf: str) -> None:
    metrics.install()
    metrics.install()
    assert metrics.installed()
    assert sum(1 for entry in hooks._handlers if entry == ("*", metrics._handler)) == 1
    metrics.uninstall()
    metrics.uninstall()
    assert not metrics.installed()
    began(wf, parent=1)
    assert value("durable_children_started_total", workflow=wf) == 0
    metrics.install()
    began(wf, parent=1)
    assert value("durable_children_started_total", workflow=wf) == 1


# --- (d) the metrics HTTP server -----------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_metrics_server_serves_metrics_and_routes(wf: str) -> None:
    began(wf, parent=1)

    def broken() -> tuple[int, str]:
        raise RuntimeError("no")

    server = metrics.start_metrics_server(
        "127.0.0.1", 0,
        extra_routes={"/healthz": lambda: (200, "ok"), "/readyz": lambda: (503, "not ready"),
                      "/broken": broken},
    )
    try:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        status, ctype, body = _get(base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert f'durable_children_started_total{{workflow="{wf}"}} 1.0' in body
        for name in ("durable_runs_in_flight", "durable_wake_latency_seconds_bucket",
                     "durable_heartbeats_total"):
            assert name in body
        assert _get(base + "/metrics?x=1")[0] == 200
        assert _get(base + "/healthz")[0::2] == (200, "ok\n")
        assert _get(base + "/readyz")[0::2] == (503, "not ready\n")
        assert _get(base + "/broken")[0] == 500
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()
    server.stop()  # idempotent
    # The port is released: it can be served again.
    again = metrics.start_metrics_server("127.0.0.1", server.port)
    again.stop()


def test_metrics_server_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigurationError) as info:
            metrics.start_metrics_server("127.0.0.1", port)
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message
        assert "--metrics-port 0" in message


def test_metrics_server_rejects_bad_port() -> None:
    with pytest.raises(ConfigurationError):
        metrics.start_metrics_server("127.0.0.1", 70000)


def test_metrics_text() -> None:
    text = metrics.metrics_text()
    assert isinstance(text, bytes)
    assert b"# TYPE durable_runs_started_total counter" in text
    registry = CollectorRegistry()
    assert metrics.metrics_text(registry) == b""


# --- (e) what /metrics exports besides the events (issue 14) --------------------------------


def _sample_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_served_registry_has_process_collectors_and_build_info() -> None:
    import platform

    text = metrics.metrics_text().decode()
    names = {line.split("{")[0].split(" ")[0] for line in _sample_lines(text)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info",
            "python_gc_collections_total", "durable_build_info"} <= names
    build = [line for line in _sample_lines(text) if line.startswith("durable_build_info{")]
    assert len(build) == 1 and build[0].endswith(" 1.0"), build
    assert f'python="{platform.python_version()}"' in build[0] and 'version="' in build[0]
    # durable's own registry stays free of the process collectors (bridgeable into the global one)
    own = metrics.metrics_text(metrics.REGISTRY).decode()
    assert "process_cpu_seconds_total" not in own and "durable_build_info" in own


def test_no_created_series_and_the_global_switch_untouched(wf: str) -> None:
    import prometheus_client
    from prometheus_client import Counter
    from prometheus_client import ProcessCollector

    began(wf)  # a labelled counter child exists
    hooks.emit("step.completed", run_id=1, workflow=wf, step="s", attempt=1, duration_s=0.01)
    for text in (metrics.metrics_text().decode(), metrics.metrics_text(metrics.REGISTRY).decode()):
        created = [line for line in _sample_lines(text) if "_created" in line.split(" ")[0]]
        assert not created, created[:5]
    # an application's own registries keep prometheus_client's default behaviour
    mine = CollectorRegistry()
    Counter("app_requests", "requests", registry=mine).inc()
    assert b"app_requests_created" in prometheus_client.generate_latest(mine)
    # and durable's registry bridges into one with its own process collector without a clash
    ProcessCollector(registry=mine)
    mine.register(metrics.REGISTRY)
    try:
        bridged = prometheus_client.generate_latest(mine).decode()
        assert "durable_build_info" in bridged and "process_cpu_seconds_total" in bridged
    finally:
        mine.unregister(metrics.REGISTRY)


def test_label_sets_exist_at_zero(wf: str) -> None:
    def present(name: str, **labels: str) -> bool:
        return metrics.REGISTRY.get_sample_value(name, labels) is not None

    for reason in ("terminal", "cancelled", "lease_lost", "shutdown"):
        assert present("durable_executions_ended_total", reason=reason)
    for source in ("poll", "notify", "local"):
        assert present("durable_claims_total", source=source)
    assert not present("durable_lease_lost_total", workflow=wf)
    metrics.declare_workflows([(wf, "q9")])
    metrics.declare_workflows([(wf, "q9")])  # idempotent
    assert present("durable_lease_lost_total", workflow=wf) and value("durable_lease_lost_total", workflow=wf) == 0
    assert present("durable_runs_started_total", workflow=wf, queue="q9")
    assert present("durable_runs_requested_total", workflow=wf, queue="q9")
    assert present("durable_children_started_total", workflow=wf)
    for outcome in ("completed", "failed", "cancelled", "continued"):
        assert present("durable_runs_finished_total", workflow=wf, queue="q9", outcome=outcome)
    for outcome in ("completed", "failed", "cancelled"):
        assert present("durable_children_finished_total", workflow=wf, outcome=outcome)
