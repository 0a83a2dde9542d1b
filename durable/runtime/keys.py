"""Operation keys: every durable operation takes the next key of the branch (the workflow
task) calling it (durable/runtime/branches.py). On replay the journal's events at that
key answer the call; a different operation at a journaled key is non-determinism."""

from __future__ import annotations

from ..errors import CancellationRequested
from ..store.rows import Key
from . import branches
from .host import RunView
from .stops import Shutdown

PATCH_MARKER = "patch"  # the event kind of a patch marker (durable/runtime/patches.py)


def branch(ex: RunView) -> branches.Branch:
    """The branch calling an operation (it must be one of ``ex``'s workflow tasks)."""
    return branches.current(ex)


def take(ex: RunView) -> Key:
    """The calling branch's next key (a shutdown stops the run at this durable point)."""
    ex.journal.check_live()
    if ex.host.closing:  # graceful shutdown: stop at this durable point
        raise ex.journal.halt(Shutdown())
    b = branch(ex)
    skip_retired(ex, b)
    return b.take()


def skip_retired(ex: RunView, b: branches.Branch, keep: str | None = None) -> None:
    """Step ``b`` over the markers of deprecated patches journaled at its next keys (but
    ``keep``'s): once ``ctx.deprecate_patch(id)`` is deleted from the code, runs that
    journaled its marker replay as if it were not there (durable/runtime/patches.py)."""
    while True:
        evs = ex.journal.at(b.next_key())
        if not evs or evs[0].kind != PATCH_MARKER or not evs[0].data.get("deprecated") or evs[0].name == keep:
            return
        b.index += 1


def give_back(ex: RunView) -> None:
    """The operation just taken wrote nothing (it raised): its key is reused."""
    branch(ex).index -= 1


async def op(ex: RunView) -> Key:
    """Take the next key; a cancellation point for graceful cancel requests (journaled, so a
    replay raises CancellationRequested at the same operation)."""
    key = take(ex)
    evs = ex.journal.at(key)
    if evs and evs[-1].kind == "cancel_observed":
        raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
    if ex.cancel_requested and not ex.cancel_observed and not evs:
        await ex.journal.append(key, "cancel_observed", None, {})
        ex.cancel_observed = True
        raise CancellationRequested(f"run {ex.run_id} was asked to cancel")
    return key
