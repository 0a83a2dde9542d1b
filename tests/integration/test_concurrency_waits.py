"""Waits across runs and wake latency under concurrency:

* ctx.wait_run on a continue-as-new chain whose first link already continued, and on a
  later link's id (a continue-as-new successor, a child retry attempt);
* wakes that are not left to the fallback poll (child retry delays, execution timeouts,
  a signal arriving while its target suspends), measured with poll_interval_s=2.0;
* run.started emitted once per run when a child's retry policy re-runs it;
* the LISTEN connection notices a half-open TCP connection (listener_keepalive_s);
* a sync step that outlives its timeout does not overlap its retry attempt.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest

import durable
from durable.observe import hooks
from durable.runtime.renew import retry_run_id

import wf_concurrency_waits as wf
from helpers import child_id, eventually, rows


def slow_engine(db, **kw: Any) -> durable.Engine:
    """An engine whose fallback poll (2 s) cannot hide a missed wake."""
    return durable.Engine(db.dsn, schema=db.schema, poll_interval_s=2.0, lease_ttl_s=5.0, **kw)


# --- 5a/5b: wait_run on chains -------------------------------------------------------------


async def _second_link(conn, first: uuid.UUID) -> uuid.UUID:
    async def live() -> list:
        return await rows(conn, "SELECT id FROM durable_runs WHERE chain_root_id = %s AND id <> %s "
                                "AND status = 'suspended'", first, first)
    (second,), = await eventually(live, 10, interval=0.02, what="the chain's second link to wait for 'go'")
    return second


async def test_wait_run_on_a_chain_whose_first_link_already_continued(engine):
    target = await engine.start(wf.two_link, 0)
    async with engine.pool.connection() as conn:
        async def continued() -> bool:
            return await rows(conn, "SELECT status FROM durable_runs WHERE id = %s", target.run_id) == [
                ("continued",)]
        await eventually(continued, 10, interval=0.02, what="the first link to continue")
        await _second_link(conn, target.run_id)
    w = await engine.start(wf.wait_run, str(target.run_id))
    await asyncio.sleep(0.3)  # the waiter registers its wait (and suspends)
    assert await engine.signal(target.run_id, "go", "x")  # follows the chain to the live link
    final = await target.result(timeout=10)
    assert final["link"] == 1 and final["got"] == "x"
    assert await w.result(timeout=10) == final


async def test_wait_run_on_a_later_link_of_a_chain(engine):
    target = await engine.start(wf.two_link, 0)
    async with engine.pool.connection() as conn:
        second = await _second_link(conn, target.run_id)
    w = await engine.start(wf.wait_run, str(second))
    await asyncio.sleep(0.3)
    assert (await w.info()).status not in ("failed", "completed", "cancelled"), await _error(w)
    assert await engine.signal(second, "go", "y")
    final = await target.result(timeout=10)
    assert final["run_id"] == str(second)
    assert await w.result(timeout=10) == final


async def test_wait_run_on_a_child_retry_attempt(engine):
    parent = await engine.start(wf.retry_wait_parent)
    first_child = child_id(parent.run_id, "cwait.fail_once_then_wait|#0")
    attempt2 = retry_run_id(first_child)
    async with engine.pool.connection() as conn:
        async def waiting() -> bool:
            return await rows(conn, "SELECT status FROM durable_runs WHERE id = %s", attempt2) == [("suspended",)]
        await eventually(waiting, 10, interval=0.02, what="the child's second attempt to wait for 'go'")
        assert await rows(conn, "SELECT status FROM durable_runs WHERE id = %s", first_child) == [("continued",)]
    w = await engine.start(wf.wait_run, str(attempt2))
    await asyncio.sleep(0.3)
    assert (await w.info()).status not in ("failed", "completed", "cancelled"), await _error(w)
    assert await engine.signal(attempt2, "go", "z")
    final = await parent.result(timeout=10)
    assert final == {"attempt": 2, "run_id": str(attempt2), "got": "z"}
    assert await w.result(timeout=10) == final


async def _error(h) -> str:
    try:
        await h.result(timeout=0.1)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


# --- 7: late wakes (poll_interval_s=2.0) -----------------------------------------------------


async def test_child_retry_attempts_start_after_their_delay_not_at_the_next_poll(db):
    async with slow_engine(db) as e:
        await e.run(wf.quick, 1, timeout=10)  # warm up (first claim, listener)
        t0 = time.monotonic()
        out = await e.run(wf.retry_parent, 3, timeout=20)
        took = time.monotonic() - t0
    assert out["attempt"] == 3
    assert took < 1.5, f"two retry delays of 0.1 s took {took:.2f} s (woken by the 2 s poll?)"


async def test_execution_timeout_fires_on_time(db):
    async with slow_engine(db) as e:
        await e.run(wf.quick, 1, timeout=10)
        t0 = time.monotonic()
        h = await e.start(wf.long_sleep, timeout=1.0)
        with pytest.raises(durable.RunFailedError) as err:
            await h.result(timeout=20)
        took = time.monotonic() - t0
    assert err.value.type == "WorkflowTimeoutError"
    assert took < 1.6, f"a 1 s execution timeout failed the run after {took:.2f} s"


async def test_signal_arriving_while_the_target_suspends_is_not_left_to_the_poll(db):
    """Latency test: each round the signal is sent as the round's step finishes, i.e.
    while the run journals the step and suspends on wait_signal; the next round (or the
    result) must follow within 0.5 s, not at the next 2 s poll."""
    rounds = 30
    async with slow_engine(db) as e:
        await e.run(wf.quick, 1, timeout=10)
        run_id = uuid.uuid4()
        sent: dict[int, float] = {}
        stepped: dict[int, float] = {}
        tasks: list[asyncio.Task] = []

        def on_step(i: int) -> None:
            stepped[i] = time.monotonic()

            async def send() -> None:
                if i % 10:
                    await asyncio.sleep((i % 10) * 0.0005)  # spread over the suspend window
                sent[i] = time.monotonic()
                await e.signal(run_id, f"s{i}", i)
            tasks.append(asyncio.get_running_loop().create_task(send()))

        wf.STEP_DONE[str(run_id)] = on_step
        try:
            h = await e.start(wf.step_then_signal, rounds, id=run_id)
            out = await h.result(timeout=40)
            done = time.monotonic()
        finally:
            wf.STEP_DONE.pop(str(run_id), None)
        await asyncio.gather(*tasks)
    assert out == list(range(rounds))
    stepped[rounds] = done
    lags = {i: stepped[i + 1] - sent[i] for i in range(rounds)}
    late = {i: round(v, 3) for i, v in lags.items() if v > 0.5}
    assert not late, f"signals picked up late (round: seconds from the send to the next round): {late}"


# --- 10a: run.started once per run ------------------------------------------------------------


async def test_run_started_is_emitted_once_per_run_on_child_retry(engine):
    seen: list[uuid.UUID] = []
    detach = hooks.on("run.started", lambda ev: seen.append(ev["run_id"]))
    try:
        parent = await engine.start(wf.retry_parent, 2)
        out = await parent.result(timeout=15)
    finally:
        detach()
    assert out["attempt"] == 2
    first_child = child_id(parent.run_id, "cwait.flaky|#0")
    counts = Counter(seen)
    assert counts[parent.run_id] == 1 and counts[first_child] == 1
    assert counts[retry_run_id(first_child)] == 1, f"run.started per run: {dict(counts)}"
    assert set(counts.values()) == {1}


# --- 10b: listener keepalive ------------------------------------------------------------------


class FreezingProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding bytes in both directions while
    keeping every socket open (a half-open connection as the client sees it)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.flowing.clear()

    def unfreeze(self) -> None:
        self.flowing.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_w]
        for src, dst in ((reader, up_w), (up_r, writer)):
            t = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                await self.flowing.wait()  # frozen: hold the bytes, keep the sockets open
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                dst.close()
            except Exception:
                pass

    async def close(self) -> None:
        self.flowing.set()
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            try:
                w.close()
            except Exception:
                pass
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _via(dsn: str, port: int) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.update(host="127.0.0.1", port=str(port))
    return make_conninfo(**params)


# set to {} to check on an engine without the setting that the test catches a stuck listener
KEEPALIVE: dict[str, Any] = {"listener_keepalive_s": 1.0}


async def test_listener_notices_a_half_open_connection(db):
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(db.dsn)
    proxy = FreezingProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    await proxy.start()
    try:
        e = durable.Engine(_via(db.dsn, proxy.port), schema=db.schema, poll_interval_s=0.5, lease_ttl_s=30.0,
                           connect_timeout_s=3.0, **KEEPALIVE)
        async with e:
            assert await e.run(wf.quick, 1, timeout=10) == 1
            await eventually(lambda: e.ready, 5, interval=0.02, what="the engine to be ready")
            proxy.freeze()
            try:
                t0 = time.monotonic()
                while e.ready and time.monotonic() - t0 < 5.0:
                    await asyncio.sleep(0.05)
                assert not e.ready, "engine.ready stayed True for 5 s over a frozen (half-open) connection"
            finally:
                proxy.unfreeze()
            await eventually(lambda: e.ready, 10, interval=0.02, what="ready to come back after the unfreeze")
            assert await e.run(wf.quick, 2, timeout=10) == 2
    finally:
        await proxy.close()


# --- 10c: sync step timeout vs. its retry ---------------------------------------------------


async def test_sync_step_past_its_timeout_does_not_overlap_the_retry(engine):
    tag = uuid.uuid4().hex
    h = await engine.start(wf.slow_sync_flow, tag)
    try:
        await h.result(timeout=15)
    except durable.RunFailedError:
        pass  # failing with StepTimeoutError twice is fine; the point is no overlap

    def mine() -> list[tuple[str, float]]:
        return [(k, t) for k, g, t in wf.SYNC_LOG if g == tag]

    await eventually(lambda: sum(k == "end" for k, _ in mine()) >= 2, 6, interval=0.02,
                     what="both attempts' threads to finish")
    log = mine()
    starts = [t for k, t in log if k == "start"]
    ends = [t for k, t in log if k == "end"]
    assert len(starts) == 2, log
    assert starts[1] >= ends[0], (f"the retry started {ends[0] - starts[1]:.2f} s before the timed-out "
                                  "first attempt's thread finished (overlap)")
