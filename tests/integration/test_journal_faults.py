"""Faults on the journal's write path: the terminal write dying with its connection must not
lose the buffered step outcome it carried (nor leave a gap in the seqs), and a lease
give-back whose first event had already committed writes only the rest. Real PostgreSQL."""
from __future__ import annotations

import asyncio

import durable
from durable.store.rows import Pending

from helpers import eventually, execute, new_engine, rows, status_of, tree_key

CALLS: dict[str, int] = {}


@durable.step
async def count(tag: str) -> str:
    CALLS[tag] = CALLS.get(tag, 0) + 1
    return tag


@durable.workflow("jfault.two_steps", version=1)
async def two_steps(ctx: durable.Context, tag: str) -> list[str]:
    return [await ctx.step(count, tag + ".a"), await ctx.step(count, tag + ".b")]


async def _sleep_once_on_completion(db, tag: str) -> None:
    """The first update of a run to 'completed' sleeps in the server (a sequence, not a
    row, says whether it did: a terminated transaction rolls rows back, not sequences)."""
    c = await db.conn()
    try:
        s = db.schema
        await c.execute(f"""
            CREATE SEQUENCE {s}.fault_{tag};
            CREATE FUNCTION {s}.fault_{tag}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('{s}.fault_{tag}') = 1 THEN PERFORM pg_sleep(30); END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER fault_{tag} BEFORE UPDATE ON {s}.durable_runs FOR EACH ROW
              WHEN (NEW.status = 'completed' AND OLD.status <> 'completed')
              EXECUTE FUNCTION {s}.fault_{tag}();
        """)
        await c.commit()
    finally:
        await c.close()


async def test_terminal_write_killed_keeps_the_last_step_and_the_seqs_contiguous(db):
    """The last step's outcome travels with the terminal state in one statement. Its backend
    is terminated mid-statement: the outcome is journaled when the lease is given back, the
    run completes on its resume, each step ran once, and the journal's seqs are 1..n."""
    async with new_engine(db) as engine:
        await _sleep_once_on_completion(db, "t1")
        h = await engine.start(two_steps, "t1")

        async def sleeping_backend():
            got = await rows(db, "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                 "AND query LIKE %s", "%durable_finish%")
            return got[0][0] if got else None
        pid = await eventually(sleeping_backend, 15, what="the terminal write to sleep in the trigger")
        await rows(db, "SELECT pg_terminate_backend(%s)", pid)

        assert await h.result(timeout=20) == ["t1.a", "t1.b"]
    assert CALLS == {"t1.a": 1, "t1.b": 1}, f"a step ran again after its outcome was lost: {CALLS}"
    seqs = [r[0] for r in await rows(db, "SELECT seq FROM durable_events WHERE run_id = %s ORDER BY seq",
                                     h.run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), f"journal gap: {seqs}"


async def test_give_back_after_a_lost_answer_writes_only_the_rest(db):
    """A give-back whose first event had committed before its answer was lost (a server
    restart between commit and reply) writes the remaining events and releases the lease,
    instead of retrying the duplicate until the lease expires."""
    async with new_engine(db, execute=False) as engine:
        h = await engine.start(two_steps, "t2")
        await execute(db, "UPDATE durable_runs SET status = 'running', lease_epoch = 4242, lease_owner = 'test' "
                       "WHERE id = %s", h.run_id)
        first = Pending(None, "note", "first", '"one"')
        second = Pending(None, "note", "second", '"two"')
        # the first of the two already committed (its answer was lost with the connection)
        await execute(db, "INSERT INTO durable_events (tree_key, run_id, seq, root_id, kind, name, data) "
                       "SELECT tree_key, id, 1, root_id, 'note', 'first', '\"one\"'::jsonb FROM durable_runs "
                       "WHERE id = %s", h.run_id)
        await asyncio.wait_for(engine.runs._release_soon(tree_key(h.run_id), h.run_id, 4242, [first, second], 1), 4)
        got = await rows(db, "SELECT seq, name FROM durable_events WHERE run_id = %s ORDER BY seq", h.run_id)
        assert got == [(1, "first"), (2, "second")]
        assert await status_of(db, h.run_id) == "suspended"
        assert (await rows(db, "SELECT lease_owner FROM durable_runs WHERE id = %s", h.run_id))[0][0] is None
