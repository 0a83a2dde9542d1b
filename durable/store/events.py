"""Journal writes, each fenced by the lease token in the same statement (a process that
lost its lease writes nothing), and the reads replay needs."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from ..errors import ChildDepthError, RunConflictError
from .connections import Conn
from .rows import ConsumedSignal, Key, Pending, split_key
from .statements import q


class SeqTaken(Exception):
    """A journal seq is written already: an earlier write committed but its answer was lost
    with the connection (a server restart, a cancelled statement). See :func:`written_since`."""


def _arrays(first_seq: int, events: list[Pending]) -> tuple[list[int], list[int | None], list[str | None],
                                                              list[str], list[str | None], list[str]]:
    cols = [split_key(e.key) for e in events]
    return (list(range(first_seq, first_seq + len(events))), [c[0] for c in cols], [c[1] for c in cols],
            [e.kind for e in events], [e.name for e in events], [e.text for e in events])


async def append_pending(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, first_seq: int,
                         pending: list[Pending]) -> bool:
    """Write events as seqs ``first_seq``... while ``token`` holds the run's lease; False
    when the lease is lost (nothing written). Each event's on-written callback gets its seq."""
    if not pending:
        return True
    try:
        row = await (await conn.execute(q("append_events"), (tree_key, run_id, token,
                                                             *_arrays(first_seq, pending)))).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == "DU005":  # durable_append: some of these seqs are written already
            raise SeqTaken(str(exc)) from None
        raise
    if not (row and row[0]):
        return False
    for i, p in enumerate(pending):
        if p.on_written is not None:
            p.on_written(first_seq + i)
    return True


async def append_event(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, seq: int, key: Key | None,
                       kind: str, name: str | None, data: str) -> bool:
    """Write one event; False when the lease is lost (nothing written)."""
    return await append_pending(conn, tree_key, run_id, token, seq, [Pending(key, kind, name, data)])


async def append_timer_event(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, *, seq: int,
                             pos: int | None, op: str | None, kind: str, name: str | None, data: dict[str, Any],
                             delay: float) -> float | None:
    """Write a timer event whose fire time (epoch seconds, returned) is the database clock
    plus ``delay``; None when the lease is lost."""
    row = await (await conn.execute(q("append_timer_event"), {
        "key": tree_key, "id": run_id, "epoch": token, "seq": seq, "pos": pos, "op": op, "kind": kind,
        "name": name, "data": json.dumps(data), "delay": delay})).fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def written_since(conn: Conn, tree_key: int, run_id: uuid.UUID, first_seq: int,
                        pending: list[Pending]) -> tuple[int, int]:
    """After :class:`SeqTaken`: how many of ``pending`` (meant for seqs ``first_seq``...)
    are journaled already (the leading ones whose key and kind are there, in order), and
    the seq the rest start at (after every event written since)."""
    cur = await conn.execute(q("events_since"), (tree_key, run_id, first_seq))
    rows = await cur.fetchall()
    done = 0
    for (_seq, pos, op, kind), p in zip(rows, pending):
        if split_key(p.key) != (pos, op) or p.kind != kind:
            break
        done += 1
    return done, (rows[-1][0] + 1 if rows else first_seq)


async def db_now(conn: Conn) -> float:
    """The database clock (epoch seconds, a time-control offset included)."""
    row = await (await conn.execute(q("db_now"))).fetchone()
    assert row is not None
    return float(row[0])


async def start_children(conn: Conn, tree_key: int, parent: uuid.UUID, token: int,
                         children: list[dict[str, Any]]) -> bool:
    """Insert child runs and the parent's child_started events in one fenced transaction
    (``durable_start_children``); False when the parent's lease is lost. A child id taken by
    another run raises RunConflictError, a tree too deep ChildDepthError (nothing written)."""
    try:
        row = await (await conn.execute(q("start_children"), (tree_key, parent, token,
                                                              json.dumps(children)))).fetchone()
    except psycopg.Error as exc:
        msg = (exc.diag.message_primary if exc.diag else None) or str(exc)
        if exc.sqlstate == "DU001":
            raise RunConflictError(
                f"{msg}. Child ids derive from the parent, the call site and key=; choose another key "
                "or site= so the id is unique") from None
        if exc.sqlstate == "DU002":
            raise ChildDepthError(f"{msg}. Flatten the tree or raise max_child_depth") from None
        raise
    return bool(row and row[0])


async def has_signal(conn: Conn, tree_key: int, run_id: uuid.UUID, name: str) -> bool:
    """Whether an unconsumed signal called ``name`` waits for the run (a cheap look first)."""
    return await (await conn.execute(q("peek_signal"), (tree_key, run_id, name))).fetchone() is not None


async def consume_signal(conn: Conn, tree_key: int, run_id: uuid.UUID, token: int, *, seq: int, pos: int | None,
                         op: str | None, name: str) -> ConsumedSignal | None:
    """Take the oldest unconsumed signal called ``name`` and journal it as ``seq`` (fenced);
    None when there was none (another waiter took it)."""
    cur = await conn.execute(q("consume_signal"), {"key": tree_key, "id": run_id, "epoch": token, "seq": seq,
                                                   "pos": pos, "op": op, "name": name})
    row = await cur.fetchone()
    return None if row is None else ConsumedSignal(leased=bool(row[0]), payload=row[1], id=row[2])
