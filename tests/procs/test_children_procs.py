"""Child workflows across processes against real PostgreSQL: fan-out/fan-in executed by
another process, SIGKILL of the parent's process, a killed listener connection, and
bursts of simultaneous child completions."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid

import psycopg
from psycopg import sql

import durable.worker.listener as listener_mod
from durable.observe import hooks

import wf_children as W
import helpers
from dbharness import BACKEND
from helpers import eventually, new_engine, rows, status_of, tree_key


def child_id(parent, key: str, wf: str = "children.kid") -> uuid.UUID:
    """The id a root ``parent`` gives its keyed child (grafted into the parent's tree)."""
    return helpers.child_id(parent, f"{wf}|key|{key}")


async def test_fanout_100_children_run_by_another_process(engine, db, worker_procs):
    kids = worker_procs("wf_children", "--queues", "kids")
    h = await engine.start(W.fanout, {"n": 100, "wf": "children.kid", "queue": "kids"})
    out = await h.result(timeout=60)
    assert out == {"sum": sum(range(100)), "count": 100, "pids": [kids.pid], "parent_pid": os.getpid()}
    ids = {r[0] for r in await rows(db, "SELECT id FROM durable_runs WHERE parent_id = %s", h.run_id)}
    assert ids == {child_id(h.run_id, f"c{i}") for i in range(100)}  # uuid5(parent, site|key|k)
    ev = await rows(db, "SELECT kind, count(*) FROM durable_events WHERE run_id = %s GROUP BY kind ORDER BY kind",
                    h.run_id)
    assert ev == [("child_completed", 100), ("child_started", 100)]


async def test_parent_process_sigkilled_children_finish_parent_resumes_elsewhere(db, worker_procs):
    n = 30
    parent_proc = worker_procs("wf_children", "--queues", "default", "--lease-ttl", "2")
    kid_proc = worker_procs("wf_children", "--queues", "kids")
    async with new_engine(db, execute=False) as client:
        h = await client.start(W.fanout, {"n": n, "wf": "children.gated", "queue": "kids"})

        async def all_waiting():
            r = await rows(db, "SELECT count(*) FILTER (WHERE status = 'suspended') FROM durable_runs "
                               "WHERE tree_key = %s AND parent_id = %s", tree_key(h.run_id), h.run_id)
            return r[0][0] == n and await status_of(db, h.run_id) == "suspended"

        await eventually(all_waiting, what="children waiting and parent suspended")
        assert (await rows(db, "SELECT lease_owner FROM durable_runs WHERE id = %s", h.run_id))[0][0] \
            == parent_proc.owner
        parent_proc.send_signal(signal.SIGKILL)
        parent_proc.wait(10)
        c = await db.conn()
        for (kid,) in await rows(c, "SELECT id FROM durable_runs WHERE tree_key = %s AND parent_id = %s",
                                 tree_key(h.run_id), h.run_id):
            await c.execute("SELECT durable_send_signal(%s, 'go', '1000', NULL)", (kid,))

        async def children_done():
            r = await rows(db, "SELECT count(*) FROM durable_runs WHERE parent_id = %s AND status = 'completed'",
                           h.run_id)
            return r[0][0] == n

        await eventually(children_done, what="children finishing while the parent's process is dead")
        assert (await rows(db, "SELECT status, next_wakeup_at IS NOT NULL FROM durable_runs WHERE id = %s",
                           h.run_id)) == [("suspended", True)]  # woken, nobody to resume it yet
        rescuer = worker_procs("wf_children", "--queues", "default")
        out = await h.result(timeout=60)
    assert out["sum"] == sum(range(n)) + 1000 * n and out["count"] == n
    assert out["pids"] == [kid_proc.pid] and out["parent_pid"] == rescuer.pid
    # no child started twice: one row and one child_started per call, each child ran once
    assert (await rows(db, "SELECT count(*), count(DISTINCT id), max(attempt) FROM durable_runs "
                           "WHERE parent_id = %s", h.run_id)) == [(n, n, 1)]
    ev = await rows(db, "SELECT kind, count(*), count(DISTINCT data->>'child_id') FROM durable_events "
                        "WHERE run_id = %s GROUP BY kind ORDER BY kind", h.run_id)
    assert ev == [("child_completed", n, 0), ("child_started", n, n)]
    sig = await rows(db, "SELECT count(*), count(consumed_seq) FROM durable_signals")
    assert sig == [(n, n)]


class _GatedConnect:
    """Stands in for durable.db in the listener: connects only while open (a partition)."""

    def __init__(self, real) -> None:
        self.real = real
        self.gate = asyncio.Event()
        self.gate.set()

    async def connect(self, *args, **kwargs):
        await self.gate.wait()
        return await self.real.connect(*args, **kwargs)


async def test_listener_killed_wakes_fall_back_to_polling_and_listener_returns(db, worker_procs, monkeypatch):
    worker_procs("wf_children", "--queues", "kids")
    shim = _GatedConnect(listener_mod.db)
    monkeypatch.setattr(listener_mod, "db", shim)
    resumed: list[tuple] = []

    async with new_engine(db, poll_interval_s=0.5) as e:
        detach = hooks.on("run.resumed", lambda ev: resumed.append((ev["run_id"], ev["source"], e.listener.up)))
        heard: list[int] = []
        detach_note = hooks.on("wake.notification", lambda ev: heard.append(1))
        try:
            old_pid = e.listener.backend_pid
            c = await db.conn()
            for round_ in range(2):
                h = await e.start(W.fanout, {"n": 3, "wf": "children.gated", "queue": "kids"})

                async def waiting(h=h):
                    r = await rows(db, "SELECT count(*) FROM durable_runs WHERE tree_key = %s AND parent_id = %s "
                                       "AND status = 'suspended'", tree_key(h.run_id), h.run_id)
                    return r[0][0] == 3 and await status_of(db, h.run_id) == "suspended"

                await eventually(waiting, what="children waiting")
                heard.clear()
                if round_ == 0:  # kill the listener's connection and keep it from reconnecting
                    shim.gate.clear()
                    await c.execute("SELECT pg_terminate_backend(%s::int)", (old_pid,))
                    await eventually(lambda: not e.listener.up, what="listener noticing the kill")
                for (kid,) in await rows(c, "SELECT id FROM durable_runs WHERE tree_key = %s AND parent_id = %s",
                                         tree_key(h.run_id), h.run_id):
                    await c.execute("SELECT durable_send_signal(%s, 'go', '0', NULL)", (kid,))
                assert (await h.result(timeout=30))["sum"] == 3
                mine = [r for r in resumed if r[0] == h.run_id and r[1] != "start"]
                if round_ == 0:
                    # woken while the listener was down: by the poll fallback
                    assert mine and all(src == "poll" and not up for _, src, up in mine), mine
                    assert not e.listener.up and not heard
                    shim.gate.set()
                    await eventually(lambda: e.listener.up, what="listener reconnecting")
                    assert e.listener.backend_pid not in (None, old_pid)
                    live = await rows(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                      e.listener.backend_pid)
                    assert live == [(1,)]
                else:  # the new listener hears the wakes again
                    assert mine and all(up for _, _, up in mine)
                    assert heard
        finally:
            detach()
            detach_note()


async def test_burst_of_simultaneous_child_completions(db, caplog):
    """Each round: all N children of one parent are released at the same instant (their
    terminal transactions all queue on the parent row, held by the test, and proceed
    together). No deadlock, no lost outcome, and the parent is woken about once per burst:
    the wake marker is written and notified only when it changes, and only a claim of
    the parent resets it, so notifications <= claims of the parent."""
    n, n_rounds = 20, 5
    caplog.set_level(logging.WARNING, logger="durable")
    resumed: list[str] = []
    notes: list[str] = []
    parent_e = new_engine(db)
    kids_e = new_engine(db, queues=("kids",), pool_size=n + 6)
    async with parent_e, kids_e:
        h = await parent_e.start(W.rounds, {"rounds": n_rounds, "n": n, "queue": "kids"})
        pid = h.run_id
        detach = hooks.on("run.resumed", lambda ev: resumed.append(ev["source"]) if ev["run_id"] == pid else None)
        listen = await db.conn()
        await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(parent_e.channel)))
        gate = await db.conn(autocommit=False)
        other = await db.conn()
        gate_pid = gate.info.backend_pid
        gate_gpid = (await rows(gate, "SELECT citus_backend_gpid()"))[0][0] if BACKEND == "citus" else None
        await gate.commit()
        per_round = []
        try:
            for r in range(n_rounds):
                keys = [f"r{r}-{i}" for i in range(n)]
                ids = [child_id(pid, k, "children.gated") for k in keys]

                async def round_ready(ids=ids):
                    got = await rows(db, "SELECT count(*) FROM durable_runs WHERE tree_key = %s AND id = ANY(%s) "
                                         "AND status = 'suspended'", tree_key(pid), ids)
                    return got[0][0] == n and await status_of(db, pid) == "suspended"

                await eventually(round_ready, what=f"round {r}: children waiting")
                await _drain(listen)
                notes.clear()
                before = len(resumed)
                await gate.execute("SELECT 1 FROM durable_runs WHERE tree_key = %s AND id = %s FOR UPDATE",
                                   (tree_key(pid), pid))
                for kid in ids:
                    await other.execute("SELECT durable_send_signal(%s, 'go', '0', NULL)", (kid,))

                async def all_blocked():
                    if BACKEND == "citus":  # the waits are on a worker: Citus's view of them, by global pid
                        got = await rows(db, "SELECT count(DISTINCT waiting_gpid) FROM citus_lock_waits "
                                             "WHERE blocking_gpid = %s", gate_gpid)
                    else:
                        got = await rows(db, "SELECT count(*) FROM pg_stat_activity "
                                             "WHERE %s = ANY(pg_blocking_pids(pid))", gate_pid)
                    return got[0][0] == n

                await eventually(all_blocked, what=f"round {r}: {n} terminal transactions queued on the parent")
                await gate.commit()  # all N terminal transactions go at once
                if r + 1 < n_rounds:
                    nxt = child_id(pid, f"r{r + 1}-0", "children.gated")
                    await eventually(lambda nxt=nxt: status_of(db, nxt), what=f"round {r + 1} starting")
                else:
                    await h.result(timeout=30)
                notes.extend(await _drain(listen, str(pid)))
                per_round.append((len(resumed) - before, len(notes)))
            assert await h.result(timeout=30) == [sum(range(n))] * n_rounds
        finally:
            detach()
    # no lost outcome: every child journaled exactly once in the parent, each ran once
    ev = await rows(db, "SELECT count(*), count(DISTINCT data->>'run_id') FROM durable_events "
                        "WHERE run_id = %s AND kind = 'child_completed'", pid)
    assert ev == [(n * n_rounds, n * n_rounds)]
    assert (await rows(db, "SELECT count(*), max(attempt) FROM durable_runs WHERE parent_id = %s "
                           "AND status = 'completed'", pid)) == [(n * n_rounds, 1)]
    for wakes, notified in per_round:
        assert 1 <= notified <= wakes, per_round
        assert wakes <= 3, per_round  # far fewer than n = 20 (typically exactly 1)
    assert not [r for r in caplog.records if r.name.startswith("durable")], caplog.text


async def _drain(conn: psycopg.AsyncConnection, prefix: str | None = None) -> list[str]:
    """Notifications received so far on ``conn`` (optionally only payloads for a run)."""
    got = []
    gen = conn.notifies(timeout=0.3)
    async for note in gen:
        if prefix is None or note.payload.startswith(prefix):
            got.append(note.payload)
    return got
