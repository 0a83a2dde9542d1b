"""Signals: send one to a run from outside any workflow, or from inside one (journaled).

A signal is a durable mailbox entry; sending it wakes the run like a child's completion
does (``durable_send_signal``). Receiving is ``ctx.wait_signal`` (durable/runtime/waits.py
consumes it and journals it under the receiver's lease).
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import ConfigurationError, DurableError, RunFinishedError, RunNotFoundError
from ..serde import dumps
from ..store import lifecycle as store_lifecycle
from ..store.connections import UNAVAILABLE, Conn, Pool, run_retrying, run_typed
from . import keys
from .host import RunView
from .stops import DatabaseLost


def signal_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigurationError(f"signal name must be a non-empty string (at most 200 characters), got {name!r}")
    return name


def run_uuid(value: Any) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ConfigurationError(f"{value!r} is not a run id (a UUID)") from None


async def send(pool: Pool, run_id: uuid.UUID, name: str, payload: Any, delivery_id: str | None,
               payload_limit: int) -> bool:
    """Send a signal from outside any workflow; False when ``delivery_id`` was already
    delivered to this run (or an earlier link of its chain)."""
    signal_name(name)
    if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id or len(delivery_id) > 500):
        raise ConfigurationError(f"delivery_id must be a non-empty string of at most 500 characters, "
                                 f"got {delivery_id!r}")
    text = dumps(payload, what=f"payload of signal {name!r}", limit=payload_limit)

    async def deliver(conn: Conn) -> bool:
        return await store_lifecycle.send_signal(conn, run_id, name, text, delivery_id)

    return await run_typed(pool, deliver, what=f"signal {name!r} to run {run_id}")


async def send_from(ex: RunView, target: Any, name: str, payload: Any) -> None:
    """``ctx.signal``: send a signal from inside a workflow, journaled. The delivery id is
    derived from this run and the call's key, so a replay (or a crash between sending and
    journaling) never delivers it twice."""
    target_id = run_uuid(target)
    signal_name(name)
    text = dumps(payload, what=f"payload of signal {name!r}", limit=ex.settings.payload_limit_bytes)
    key = await keys.op(ex)
    found = f"signal {name!r} to run {target_id}"
    evs = ex.journal.expect(key, ("signal_sent",), name, found)
    if evs:
        data = evs[0].data
        if data.get("target") != str(target_id):
            raise ex.journal.nondeterminism(key, f"signal {name!r} to run {data.get('target')}", found)
        if data.get("error"):
            raise _journaled_error(data["error"], target_id)
        return
    delivery = f"{ex.run_id}:{key}"
    error: dict[str, str] | None = None

    async def deliver(conn: Conn) -> None:
        await store_lifecycle.send_signal(conn, target_id, name, text, delivery)

    ex.begin_busy()  # the driver must not suspend the run while this is in flight
    try:
        await ex.journal.flush()
        try:
            await run_retrying(ex.host.pool, deliver, what=f"signal {name!r} to run {target_id}")
        except UNAVAILABLE as exc:
            raise ex.journal.halt(DatabaseLost()) from exc  # this execution stops; the run resumes later
        except (RunNotFoundError, RunFinishedError) as exc:
            error = {"code": "DU003" if isinstance(exc, RunNotFoundError) else "DU004", "message": str(exc)}
        await ex.journal.append(key, "signal_sent", name, {"target": str(target_id), "delivery_id": delivery,
                                                          **({"error": error} if error else {})})
    finally:
        ex.end_busy()
    if error is not None:
        raise _journaled_error(error, target_id)


def _journaled_error(error: dict[str, str], target: uuid.UUID) -> DurableError:
    """The error a send journaled (raised the same way on replay)."""
    if error.get("code") == "DU003":
        return RunNotFoundError(target)
    if error.get("code") == "DU004":
        return RunFinishedError(error["message"])
    return DurableError(error.get("message", "the signal could not be sent"))
