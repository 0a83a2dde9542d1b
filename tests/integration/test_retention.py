"""Retention (durable gc): deletes exactly the finished run trees it should (whole trees:
the root, its continue-as-new links, every descendant), in bounded batches, never one a
live run may still need; also runs in the background. (Parsing durations:
tests/unit/test_durations.py.)"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import wf_cli

import durable
from durable.observe import hooks
from durable.errors import ConfigurationError
from durable.store.retention import gc
from durable.testing import TimeControl
from durable.store.rows import in_tree
from helpers import count, eventually, tree_key

OLD, OLDER, YOUNG = 7200, 7300, 600  # seconds since finishing; the cutoff is 3600


class Forest:
    """Runs inserted as rows, to build every shape retention must judge."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.roots: dict[uuid.UUID, uuid.UUID] = {}
        self.depth: dict[uuid.UUID, int] = {}
        self.keep: set[uuid.UUID] = set()
        self.gone: set[uuid.UUID] = set()
        self.signals_gone = 0

    async def add(self, expect: str, *, parent=None, status="completed", age=OLD, chain=None, rid=None,
                  continued_to=None, signals=0) -> uuid.UUID:
        tree_root = self.roots[parent] if parent else self.roots[chain] if chain else None
        rid = rid or (in_tree(tree_root, uuid.uuid4()) if tree_root else uuid.uuid4())
        root = tree_root or rid
        self.roots[rid] = root
        self.depth[rid] = self.depth[parent] + 1 if parent else 0
        terminal = status in ("completed", "failed", "cancelled", "continued")
        key = tree_key(root)
        await self.conn.execute(
            "INSERT INTO durable_runs (tree_key, id, root_id, parent_id, chain_root_id, continued_to, workflow, "
            "version, status, input, depth, created_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, 'forest', 1, "
            "%s, 'null', %s, durable_now() - make_interval(secs => %s + 60), "
            "CASE WHEN %s THEN durable_now() - make_interval(secs => %s) END)",
            (key, rid, root, parent, chain or rid, continued_to, status, self.depth[rid], age, terminal, age))
        await self.conn.execute(
            "INSERT INTO durable_events (tree_key, run_id, seq, root_id, pos, kind) "
            "VALUES (%s, %s, 1, %s, 0, 'x'), (%s, %s, 2, %s, 1, 'y')", (key, rid, root, key, rid, root))
        for _ in range(signals):
            await self.conn.execute("INSERT INTO durable_signals (tree_key, run_id, root_id, name) "
                                    "VALUES (%s, %s, %s, 's')", (key, rid, root))
        (self.keep if expect == "keep" else self.gone).add(rid)
        if expect == "gone":
            self.signals_gone += signals
        return rid


async def build_forest(f: Forest) -> dict[str, uuid.UUID]:
    ids = {}
    # a finished tree, parents finished before their children: all of it goes
    r1 = ids["done_root"] = await f.add("gone", age=OLDER, signals=2)
    c11 = await f.add("gone", parent=r1, signals=1)
    await f.add("gone", parent=r1)
    await f.add("gone", parent=c11)
    # a running root keeps its finished children and grandchildren
    r2 = await f.add("keep", status="running")
    c21 = ids["child_of_running"] = await f.add("keep", parent=r2)
    await f.add("keep", parent=c21)
    # a great-grandparent still running keeps the whole line
    r10 = await f.add("keep", status="suspended")
    c10 = await f.add("keep", parent=r10, age=OLDER)
    g10 = await f.add("keep", parent=c10)
    await f.add("keep", parent=g10)
    # finished root, suspended child, finished grandchild: nothing goes
    r3 = await f.add("keep")
    c31 = await f.add("keep", parent=r3, status="suspended")
    await f.add("keep", parent=c31)
    # an abandoned child still running keeps its finished parent
    r12 = await f.add("keep")
    await f.add("keep", parent=r12, status="running")
    # a young child keeps its old parent
    r4 = await f.add("keep")
    await f.add("keep", parent=r4, age=YOUNG)
    # continue-as-new: a chain with a live link stays whole (its links are one tree)
    c5 = ids["continued_live"] = uuid.uuid4()
    c5b = in_tree(c5, uuid.uuid4())
    await f.add("keep", rid=c5, status="continued", continued_to=c5b)
    await f.add("keep", rid=c5b, chain=c5, status="running")
    # a chain finished long ago goes, with the children of its first link
    d6 = uuid.uuid4()
    d6b = in_tree(d6, uuid.uuid4())
    await f.add("gone", rid=d6, status="continued", continued_to=d6b, age=OLDER)
    await f.add("gone", parent=d6, age=OLDER)
    await f.add("gone", rid=d6b, chain=d6)
    # a chain whose last link finished recently stays whole
    e7 = uuid.uuid4()
    e7b = in_tree(e7, uuid.uuid4())
    await f.add("keep", rid=e7, status="continued", continued_to=e7b)
    await f.add("keep", rid=e7b, chain=e7, age=YOUNG)
    # a child chain under a finished parent goes with the parent
    p11 = await f.add("gone", age=OLD - 100)
    k1b = in_tree(p11, uuid.uuid4())
    k1 = await f.add("gone", parent=p11, status="continued", continued_to=k1b)
    await f.add("gone", parent=p11, rid=k1b, chain=k1)
    # M:N: a run a live run waits on stays; one only finished runs waited on goes
    x = ids["awaited"] = await f.add("keep")
    w = ids["waiter"] = await f.add("keep", status="suspended")
    y = ids["awaited_done"] = await f.add("gone")
    z = await f.add("gone")
    await f.conn.execute("INSERT INTO durable_waiters (tree_key, target_id, waiter_id, waiter_key) "
                         "VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)",
                         (tree_key(x), x, w, tree_key(w), tree_key(y), y, z, tree_key(z)))
    # plain finished runs of every terminal status
    await f.add("gone", status="failed")
    await f.add("gone", status="cancelled", signals=1)
    # young ones stay
    await f.add("keep", age=YOUNG)
    await f.add("keep", status="failed", age=YOUNG)
    return ids


async def test_gc_deletes_exactly_what_it_should_on_a_mixed_forest(db):
    conn = await db.conn()
    f = Forest(conn)
    ids = await build_forest(f)
    preview = await gc(conn, 3600, batch=3, dry_run=True)
    assert (preview.runs, preview.dry_run) == (len(f.gone), True)
    assert await count(conn, "durable_runs") == len(f.keep) + len(f.gone)  # the dry run kept everything

    res = await gc(conn, "1h", batch=3)
    remaining = {r[0] for r in await (await conn.execute("SELECT id FROM durable_runs")).fetchall()}
    assert remaining == f.keep
    assert res.runs == len(f.gone) and res.events == 2 * len(f.gone) and res.signals == f.signals_gone
    assert res.batches > 3 and res.passes == 1  # bounded batches; one pass, each tree deleted whole
    assert await count(conn, "durable_events") == 2 * len(f.keep)
    assert await count(conn, "durable_signals") == 0
    waiters = await (await conn.execute("SELECT target_id, waiter_id FROM durable_waiters")).fetchall()
    assert waiters == [(ids["awaited"], ids["waiter"])]

    again = await gc(conn, 3600, batch=3)
    assert again.runs == 0
    # with a shorter age the young ones qualify too, but never past a live ancestor or chain
    await gc(conn, 60)
    remaining = {r[0] for r in await (await conn.execute("SELECT id FROM durable_runs")).fetchall()}
    assert ids["child_of_running"] in remaining and ids["continued_live"] in remaining
    assert ids["awaited"] in remaining and ids["done_root"] not in remaining


async def test_concurrent_collectors_delete_each_run_once(db):
    conn = await db.conn()
    f = Forest(conn)
    for _ in range(40):
        root = await f.add("gone")
        for _ in range(4):
            await f.add("gone", parent=root)
    conns = [await db.conn() for _ in range(3)]
    results = await asyncio.gather(*(gc(c, 3600, batch=7) for c in conns))
    assert sum(r.runs for r in results) == 200
    assert sum(r.events for r in results) == 400
    assert await count(conn, "durable_runs") == 0


async def test_gc_on_real_runs_keeps_what_a_live_parent_needs(engine):
    done = await engine.start(wf_cli.family, 3)
    assert await done.result(timeout=20) == 0 + 1 + 4
    waiting = await engine.start(wf_cli.family_then_signal, 2)

    async def kids_done_parent_waiting() -> list[uuid.UUID] | None:
        """The parent suspends twice (on its children, then on the signal): wait for the second."""
        async with engine.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, status FROM durable_runs WHERE parent_id = %s", (waiting.run_id,))).fetchall()
        done = len(rows) == 2 and all(st == "completed" for _, st in rows)
        return [r[0] for r in rows] if done and (await waiting.info()).status == "suspended" else None

    kids = await eventually(kids_done_parent_waiting, what="the children to finish and the parent to wait")
    async with TimeControl(engine) as clock:
        await clock.advance(2 * 3600)
        res = await gc(engine.pool, 3600)
        assert res.runs == 4  # the finished family; the waiting parent's tree stays
        with pytest.raises(durable.RunNotFoundError):
            await done.info()
        for kid in kids:
            assert (await engine.get_handle(kid).info()).status == "completed"
        await waiting.signal("go", "now")
        assert await waiting.result(timeout=20) == {"sum": 1, "go": "now"}
        # the parent just finished (not old yet): its tree stays whole, though its children
        # finished long ago; once the parent is old too, the tree goes
        assert (await gc(engine.pool, 3600)).runs == 0
        assert (await waiting.info()).status == "completed"
        await clock.advance(2 * 3600)
        assert (await gc(engine.pool, 3600)).runs == 3
    async with engine.pool.connection() as conn:
        assert await count(conn, "durable_events") == 0


async def test_background_retention_in_the_engine(db):
    rounds = []
    detach = hooks.on("gc.completed", lambda ev: rounds.append(ev["runs"]))
    try:
        async with durable.Engine(db.dsn, schema=db.schema, retention_s=3600, retention_interval_s=0.2,
                                  poll_interval_s=0.2) as e:
            h = await e.start(wf_cli.echo, {"a": 1})
            await h.result(timeout=20)
            async with TimeControl(e) as clock:
                await clock.advance(7200)
                for _ in range(250):
                    if sum(rounds) >= 1:
                        break
                    await asyncio.sleep(0.02)
                with pytest.raises(durable.RunNotFoundError):
                    await h.info()
    finally:
        detach()
    assert sum(rounds) == 1


async def test_bad_gc_arguments_write_nothing(db):
    conn = await db.conn()
    await Forest(conn).add("keep")
    for kwargs in ({"batch": 0}, {"batch": True}, {"max_batches": 0}):
        with pytest.raises(ConfigurationError):
            await gc(conn, 60, **kwargs)
    with pytest.raises(ConfigurationError):
        await gc(conn, -1)
    assert await count(conn, "durable_runs") == 1
