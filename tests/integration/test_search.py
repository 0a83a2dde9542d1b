"""Listing and searching runs (issue 14): every filter of engine.list_runs / count_runs,
keyset paging stable under concurrent inserts, search attributes set at start and by the
workflow (replay-safe), bad attributes and unknown filter keys (typed, nothing written),
child keys, and plans served by indexes at ~50k runs."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

import durable
from durable.cli import commands as cli
from durable.store import search as store_search
from durable.store.rows import RunFilter

import wf_search as W
from helpers import eventually, execute, new_engine, rows, status_of


async def ids(page_or_runs: Any) -> set[uuid.UUID]:
    runs = page_or_runs.runs if hasattr(page_or_runs, "runs") else page_or_runs
    return {r.id for r in runs}


async def _seed(engine: durable.Engine) -> dict[str, Any]:
    """Runs parked on a queue nobody serves: 3 orders.* and 2 billing.* runs, with attributes."""
    a = await engine.start("search.order", "c1", queue="nowhere", attributes={"customer": "c1", "tier": ["gold"]})
    b = await engine.start("search.order", "c2", queue="nowhere", attributes={"customer": "c2", "vip": True})
    c = await engine.start("search.order", "c3", queue="elsewhere", attributes={"customer": "c1", "n": 7})
    d = await engine.start("search.leaf", 1, queue="nowhere")
    e = await engine.start("search.leaf", 2, queue="nowhere")
    return {"a": a.run_id, "b": b.run_id, "c": c.run_id, "d": d.run_id, "e": e.run_id}


async def test_each_filter_and_count(db):
    async with new_engine(db) as engine:
        r = await _seed(engine)
        # d failed an hour ago, e completed now
        await execute(db, "UPDATE durable_runs SET status = 'failed', error = '{\"type\": \"Declined\"}', "
                          "created_at = now() - interval '2 hours', finished_at = now() - interval '1 hour' "
                          "WHERE id = %s", r["d"])
        await execute(db, "UPDATE durable_runs SET status = 'completed', finished_at = now() WHERE id = %s", r["e"])
        everything = await engine.list_runs()
        assert [x.id for x in everything.runs] == [r["e"], r["c"], r["b"], r["a"], r["d"]]  # newest first
        assert everything.next_cursor is None and await engine.count_runs() == 5

        async def both(expect: set[uuid.UUID], **f: Any) -> None:
            assert await ids(await engine.list_runs(**f)) == expect, f
            assert await engine.count_runs(**f) == len(expect), f

        await both({r["d"]}, status="failed")
        await both({r["d"], r["e"]}, status=["failed", "completed"])
        await both({r["a"], r["b"], r["c"]}, workflow="search.order")
        await both({r["a"], r["b"], r["c"], r["d"], r["e"]}, workflow="search.*")
        await both({r["d"], r["e"]}, workflow="*.leaf")
        await both(set(), workflow="search_order")  # '_' is no wildcard
        await both({r["c"]}, queue="elsewhere")
        now = datetime.now(timezone.utc)
        await both({r["d"]}, created_before=now - timedelta(minutes=90))
        await both({r["a"], r["b"], r["c"], r["e"]}, created_after=now - timedelta(minutes=30))
        await both({r["d"]}, finished_before=now - timedelta(minutes=30))
        await both({r["e"]}, finished_after=now - timedelta(minutes=30))
        await both({r["a"], r["c"]}, attributes={"customer": "c1"})
        await both({r["a"]}, attributes={"customer": "c1", "tier": "gold"})  # a list attribute holding the value
        await both({r["a"]}, attributes={"tier": ["gold"]})
        await both({r["b"]}, attributes={"vip": True})
        await both({r["c"]}, attributes={"n": 7})
        await both(set(), attributes={"customer": "c1", "vip": True})
        await both({r["a"]}, attributes={"customer": "c1"}, queue="nowhere", workflow="search.*")
        page = await engine.list_runs(attributes={"customer": "c1"})
        first = next(x for x in page.runs if x.id == r["a"])
        assert first.attributes == {"customer": "c1", "tier": ["gold"]} and first.child_key is None
        assert (await engine.list_runs(status="failed")).runs[0].error_type == "Declined"


async def test_parent_root_and_child_keys(db):
    async with new_engine(db) as engine:
        h = await engine.start(W.fanout, 25)
        assert await h.result(timeout=60) == sum(i for i in range(25) if i % 10 != 3) + 1
        kids = await engine.list_runs(parent=h.run_id, limit=100)
        assert len(kids.runs) == 26 and await engine.count_runs(parent=h.run_id) == 26
        keys = {x.child_key for x in kids.runs}
        assert keys == {f"item-{i:03d}" for i in range(25)} | {"special"}
        assert await engine.count_runs(parent=h.run_id, status="failed") == 3  # items 3, 13, 23
        assert await engine.count_runs(root=h.run_id) == 27  # the tree: the root and its children
        assert await engine.count_runs(top_level=True) == 1
        with pytest.raises(durable.ConfigurationError, match="not a run id"):
            await engine.list_runs(parent="nope")


async def test_paging_is_stable_under_concurrent_inserts(db):
    """Pages of 7 while another task keeps starting runs: every run that existed before the
    first page is listed exactly once; no run is listed twice."""
    async with new_engine(db) as engine:
        before = {(await engine.start("search.leaf", i, queue="nowhere")).run_id for i in range(60)}
        stop = asyncio.Event()

        async def insert() -> None:
            i = 0
            while not stop.is_set():
                await engine.start("search.leaf", 1000 + i, queue="nowhere")
                i += 1
                await asyncio.sleep(0)

        writer = asyncio.create_task(insert())
        seen: list[uuid.UUID] = []
        cursor = None
        pages = 0
        while True:
            page = await engine.list_runs(workflow="search.leaf", limit=7, cursor=cursor)
            seen += [x.id for x in page.runs]
            pages += 1
            await asyncio.sleep(0.01)  # let inserts land between pages
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        stop.set()
        await writer
        assert len(seen) == len(set(seen)), "a run was listed twice"
        assert before <= set(seen), "a run that existed before paging was skipped"
        assert pages >= 9
        with pytest.raises(durable.ConfigurationError, match="not a cursor"):
            await engine.list_runs(cursor="yesterday")


async def test_paging_through_runs_created_at_the_same_instant(db):
    """40 runs of one transaction share created_at: pages of 7 (keyset on (created_at, id))
    list each once, in id order within the instant, while another transaction adds 40 more
    with the same created_at between pages (they sort among the first ones by id: each is
    listed at most once)."""
    async with new_engine(db, execute=False):
        pass
    fill = ("INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, status, input, "
            "created_at) SELECT durable_tree_key(g), g, g, g, 'search.tie', 1, 'pending', '1', "
            "'2026-01-01T00:00:00Z' FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, 40)) s")
    await execute(db, fill)
    before = {r for (r,) in await rows(db, "SELECT id FROM durable_runs")}
    conn = await db.conn()
    seen: list[uuid.UUID] = []
    f = RunFilter(workflow="search.tie")
    while True:
        page = await store_search.list_runs(conn, f, 7)
        seen += [x.id for x in page.runs]
        if len(seen) == 14:
            await execute(db, fill)
        if page.next_cursor is None:
            break
        f = RunFilter(workflow="search.tie", before=store_search.decode_cursor(page.next_cursor))
    assert len(seen) == len(set(seen)) and before <= set(seen)
    firsts = [x for x in seen if x in before]
    assert firsts == sorted(firsts, reverse=True)


async def test_attributes_from_the_workflow_are_journaled_once(db):
    async with new_engine(db) as engine:
        h = await engine.start(W.order, "c9", attributes={"source": "api"})

        async def parked() -> bool:
            return await status_of(db, h.run_id) == "suspended"
        await eventually(parked, 20, what="the order to wait for its signal")
        page = await engine.list_runs(attributes={"customer": "c9"})
        assert [x.id for x in page.runs] == [h.run_id]
        assert page.runs[0].attributes == {"source": "api", "customer": "c9", "tier": ["gold", "eu"]}
    # a new process replays the history: the first set_attributes is not written again
    async with new_engine(db) as engine:
        await engine.signal(h.run_id, "go", "ok")
        assert await engine.result(h.run_id, timeout=30) == "c9:ok"
        got = (await engine.list_runs(attributes={"tier": "eu", "stage": "paid"})).runs
        assert [x.id for x in got] == [h.run_id]
        assert got[0].attributes == {"source": "api", "customer": "c9", "tier": ["gold", "eu"], "stage": "paid",
                                     "amount": 12.5}
    kinds = [k for (k,) in await rows(db, "SELECT kind FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)]
    assert kinds.count("attributes") == 2
    known = [k for (k,) in await rows(db, "SELECT key FROM durable_search_keys ORDER BY key")]
    assert known == ["amount", "customer", "source", "stage", "tier"]


async def test_bad_attributes_and_unknown_filter_keys_write_nothing(db):
    async with new_engine(db) as engine:
        for bad, word in (({"customer": {"id": 1}}, "'customer'"), ({"tags": ["a", ["b"]]}, "'tags'"),
                          ({"x": None}, "'x'"), ({"bad key": 1}, "not a plain name"),
                          ({"f": float("nan")}, "'f'")):
            with pytest.raises(durable.SearchAttributeError, match=word) as info:
                await engine.start("search.leaf", 1, queue="nowhere", attributes=bad)
            assert "str, int, float or bool" in str(info.value) or "plain name" in str(info.value)
        assert await rows(db, "SELECT count(*) FROM durable_runs") == [(0,)]
        assert await rows(db, "SELECT count(*) FROM durable_search_keys") == [(0,)]
        await engine.start("search.leaf", 1, queue="nowhere", attributes={"customer": "c1", "region": "eu"})
        with pytest.raises(durable.SearchAttributeError, match="'custmer'.*known keys: customer, region"):
            await engine.list_runs(attributes={"custmer": "c1"})
        with pytest.raises(durable.SearchAttributeError, match="'customer'"):
            await engine.count_runs(attributes={"customer": {"nested": 1}})
        with pytest.raises(durable.ConfigurationError, match="unknown run status 'done'"):
            await engine.list_runs(status="done")
        with pytest.raises(durable.ConfigurationError, match="timezone-aware"):
            await engine.list_runs(created_after=datetime.now())
        # inside a workflow: the workflow sees the typed error, nothing is journaled
        msg = await engine.run(W.bad_attrs, timeout=20)
        assert "'customer'" in msg and "list of those" in msg
        (rid,), = await rows(db, "SELECT id FROM durable_runs WHERE workflow = 'search.bad_attrs'")
        assert await rows(db, "SELECT count(*) FROM durable_events WHERE run_id = %s AND kind = 'attributes'",
                          rid) == [(0,)]
        assert await rows(db, "SELECT attributes FROM durable_runs WHERE id = %s", rid) == [(None,)]


# --- plans at ~50k runs --------------------------------------------------------------------------

N = 50_000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for sub in plan.get("Plans", ()):
        yield from _nodes(sub)


async def _fill(db: Any, n: int) -> None:
    """n runs inserted set-based: 5 workflows in 2 families, 3 queues, 2 % failed, a few
    trees, a customer attribute on every 10th run; then ANALYZE."""
    await execute(db, f"""
        INSERT INTO durable_runs (tree_key, id, root_id, chain_root_id, workflow, version, queue, status, input,
                                  error, attributes, created_at, started_at, finished_at)
        SELECT durable_tree_key(g), g, g, g,
               CASE WHEN i %% 1000 = 3 THEN 'billing.rare'
                    ELSE (ARRAY['orders.charge', 'orders.ship', 'orders.refund', 'billing.invoice',
                                'billing.dun'])[1 + i %% 5] END,
               1, CASE WHEN i %% 1000 = 5 THEN 'rare' ELSE (ARRAY['default', 'payments', 'mail'])[1 + i %% 3] END,
               CASE WHEN i %% 50 = 7 THEN 'failed' WHEN i %% 1000 = 1 THEN 'suspended' ELSE 'completed' END, '1',
               CASE WHEN i %% 50 = 7 THEN '{{"type": "Declined"}}'::jsonb END,
               CASE WHEN i %% 10 = 0 THEN jsonb_build_object('customer', 'c' || (i %% 5000), 'tier',
                                                            jsonb_build_array('gold')) END,
               now() - make_interval(secs => ({n} - i) * 10), now() - make_interval(secs => ({n} - i) * 10),
               now() - make_interval(secs => ({n} - i) * 10 - 5)
          FROM (SELECT gen_random_uuid() AS g, i FROM generate_series(1, {n}) i) s""")
    await execute(db, "INSERT INTO durable_search_keys (key) VALUES ('customer'), ('tier')")
    await execute(db, "ANALYZE durable_runs")


@pytest.mark.postgres_only("plans of plain PostgreSQL")
async def test_plans_use_indexes_at_50k_runs(db):
    async with new_engine(db, execute=False):
        pass  # migrated
    await _fill(db, N)
    (tree,), = await rows(db, "SELECT id FROM durable_runs ORDER BY created_at LIMIT 1")
    now = datetime.now(timezone.utc)
    filters = {
        "newest": RunFilter(),
        "status": RunFilter(statuses=("failed",)),
        "workflow": RunFilter(workflow="orders.charge"),
        "glob": RunFilter(workflow="orders.*"),
        "queue": RunFilter(queue="payments"),
        "rare workflow": RunFilter(workflow="billing.rare"),
        "rare glob": RunFilter(workflow="billing.r*"),
        "rare queue": RunFilter(queue="rare"),
        "created": RunFilter(created_after=now - timedelta(days=1), created_before=now - timedelta(hours=1)),
        "finished": RunFilter(finished_before=now - timedelta(days=2)),
        "finished_after": RunFilter(finished_after=now - timedelta(hours=1)),
        "parent": RunFilter(parent_id=tree),
        "root": RunFilter(root_id=tree),
        "attributes": RunFilter(attributes={"customer": "c10"}),
        "attributes+status": RunFilter(attributes={"tier": "gold", "customer": "c20"}, statuses=("completed",)),
        "top_level": RunFilter(top_level=True),
    }
    conn = await db.conn()
    for name, f in filters.items():
        (doc,) = await store_search.explain(conn, f, 50, "ANALYZE, BUFFERS, FORMAT JSON")
        plan = (doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"]
        nodes = list(_nodes(plan))
        seq = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "durable_runs"]
        assert not seq, f"{name}: a sequential scan of durable_runs: {json.dumps(plan)[:1500]}"
        read = sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0)
                   for n in nodes if n.get("Relation Name") == "durable_runs")
        # the plain page reads the page; a filter matching a fraction f of the runs reads
        # about limit / f rows newest first, or only its matches through its own index
        bound = {"newest": 51, "top_level": 51, "workflow": 51 * 6, "queue": 51 * 4, "glob": 51 * 3,
                 "status": 51 * 50 * 2}.get(name, 1000)
        assert read <= bound, f"{name}: read {read} rows for a page of 50"
        used = {n.get("Index Name") for n in nodes}
        if name.startswith("rare"):  # 0.1 % of the runs: through the workflow / queue index
            assert used & {"durable_runs_workflow_idx", "durable_runs_queue_idx"}, f"{name}: {used}"
        if name.startswith("attributes"):
            assert "durable_runs_attributes_idx" in used, f"{name}: {used}"


# --- the CLI: durable runs --attr / --since, durable count, show, tree with child keys ------------


async def run_cli(db: Any, *args: str, expect: int = 0) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--dsn", db.dsn, "--schema", db.schema, *args], stdout=out,
                                   stderr=err)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    assert code == expect, f"exit {code}, expected {expect}\nstdout: {out.getvalue()}\nstderr: {err.getvalue()}"
    return out.getvalue(), err.getvalue()


async def test_cli_runs_count_and_show_with_attributes(db):
    async with new_engine(db) as engine:
        r = await _seed(engine)
        await execute(db, "UPDATE durable_runs SET status = 'failed' WHERE id = %s", r["c"])
    out, _ = await run_cli(db, "runs", "--attr", "customer=c1", "--json")
    assert {x["id"] for x in json.loads(out)["runs"]} == {str(r["a"]), str(r["c"])}
    out, _ = await run_cli(db, "runs", "--attr", "customer=c1", "--status", "failed", "--workflow", "search.*",
                           "--since", "1h", "--json")
    assert [x["id"] for x in json.loads(out)["runs"]] == [str(r["c"])]
    out, _ = await run_cli(db, "runs", "--attr", "n=7")  # JSON values: 7 is a number
    assert str(r["c"]) in out and "ATTRIBUTES" in out and "customer=c1" in out
    out, _ = await run_cli(db, "count", "--attr", "customer=c1")
    assert out.strip() == "2"
    out, _ = await run_cli(db, "count", "--workflow", "search.*", "--json")
    assert json.loads(out) == {"count": 5}
    out, _ = await run_cli(db, "count", "--status", "failed", "--since", "1h", "--queue", "elsewhere")
    assert out.strip() == "1"
    _, err = await run_cli(db, "runs", "--attr", "custmer=c1", expect=2)
    assert "'custmer'" in err and "known keys: customer, n, tier, vip" in err
    _, err = await run_cli(db, "count", "--attr", "customer", expect=2)
    assert "KEY=VALUE" in err
    out, _ = await run_cli(db, "show", str(r["a"]))
    assert "attrs" in out and 'tier=["gold"]' in out
    page1, _ = await run_cli(db, "runs", "--limit", "2", "--json")
    doc = json.loads(page1)
    page2, _ = await run_cli(db, "runs", "--limit", "2", "--cursor", doc["next_cursor"], "--json")
    assert not {x["id"] for x in doc["runs"]} & {x["id"] for x in json.loads(page2)["runs"]}


async def test_cli_tree_shows_child_keys_and_groups_large_fan_outs(db):
    async with new_engine(db) as engine:
        small = await engine.start(W.fanout, 3)
        big = await engine.start(W.fanout, 40)
        assert await small.result(timeout=60) == 0 + 1 + 2 + 1
        await big.result(timeout=90)
    out, _ = await run_cli(db, "tree", str(small.run_id))
    assert "search.leaf [item-000]" in out and "search.leaf [special]" in out and out.count("├── ") == 3
    out, _ = await run_cli(db, "tree", str(big.run_id))
    lines = out.splitlines()
    assert len(lines) == 3, out  # the root, a group of 40 keyed children, the child keyed 'special'
    group = next(ln for ln in lines if "[40 × search.leaf key item-*]" in ln)
    assert "4 failed" in group and "36 completed" in group and "e.g. item-003" in group
    assert any("search.leaf [special]" in ln for ln in lines)
    everything, _ = await run_cli(db, "tree", str(big.run_id), "--all")
    assert len(everything.splitlines()) == 42 and "[item-039]" in everything
    doc = json.loads((await run_cli(db, "tree", str(big.run_id), "--json"))[0])
    assert len(doc["tree"]["children"]) == 41 and {c["key"] for c in doc["tree"]["children"]} >= {"item-000"}
