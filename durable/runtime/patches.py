"""Patches: safe code changes for runs already in flight (``ctx.patched`` and
``ctx.deprecate_patch``, with Temporal's semantics).

A patch is a change id the workflow's code asks about at the point where the code changed::

    if ctx.patched("fraud-check"):
        await ctx.step(check_fraud, order)      # the new code
    else:
        await ctx.step(old_check, order)        # what runs recorded before the change did

The first time an execution asks (live, or replaying past the end of its history) it
journals a *marker* (an event of kind ``patch`` named by the change id) at the calling
branch's next key and takes the new path. A replay that finds the marker at that key takes
the new path too (the marker is consumed, like any operation). A replay that finds another
operation there replays a history recorded before the change: the answer is False and no
key is consumed, so the old code's operation meets its own event next.

``deprecate_patch(id)`` is the second step, once no run recorded before the change is left:
the code takes the new path always; a marker of that id found at this point is consumed,
and live (or past the history) a *deprecated* marker is journaled, so a process still
running the ``patched`` code (a rolling deploy) replays a new run on the new path. Deprecated
markers the code no longer asks for are stepped over (:func:`durable.runtime.keys.skip_retired`),
so the ``deprecate_patch`` call can be deleted once the runs that recorded ``patched``
markers have finished.

Answers are remembered per branch and change id: a call in a loop answers the same and
journals one marker per branch. One change id belongs to one call site (a file and line):
the same id asked at a second place in one run's execution is refused (:class:`PatchError`),
since the two places would be one change in the history and two in the code.
"""

from __future__ import annotations

from ..errors import PatchError
from ..store.rows import Event
from . import keys
from .host import RunView

MARKER = keys.PATCH_MARKER  # the event kind of a patch marker (its name: the change id)
_ID_LIMIT = 200


def is_marker(ev: Event) -> bool:
    return ev.kind == MARKER


class Patches:
    """The patch answers of one execution (its :class:`~durable.Context` holds one)."""

    def __init__(self, ex: RunView) -> None:
        self.ex = ex
        self.sites: dict[str, tuple[str, int]] = {}                 # change id -> its call site
        self.answers: dict[tuple[tuple[int, ...], str], bool] = {}  # (branch path, change id) -> answer

    def ask(self, change_id: object, site: tuple[str, int], *, deprecated: bool) -> bool:
        """True when the code takes the new path at ``site`` (see the module's text)."""
        what = "ctx.deprecate_patch" if deprecated else "ctx.patched"
        if not isinstance(change_id, str) or not change_id.strip() or len(change_id) > _ID_LIMIT:
            raise PatchError(
                f"{what} takes a change id: a non-empty string of at most {_ID_LIMIT} characters naming the "
                f"change, e.g. {what}(\"fraud-check\"); got {change_id!r}. Nothing was journaled.")
        first = self.sites.setdefault(change_id, site)
        if first != site:
            raise PatchError(
                f"change id {change_id!r} is asked at two places in run {self.ex.run_id}: {first[0]}:{first[1]} "
                f"and {site[0]}:{site[1]}. One change id guards one place: give each place its own id "
                f"(e.g. \"{change_id}-2\"), or keep the answer of the first call in a variable and use it at "
                "both. Nothing was journaled.")
        branch = keys.branch(self.ex)
        memo = (branch.path, change_id)
        answer = self.answers.get(memo)
        if answer is None:
            answer = self.answers[memo] = self._decide(change_id, deprecated)
        return answer

    def _decide(self, change_id: str, deprecated: bool) -> bool:
        ex = self.ex
        journal = ex.journal
        branch = keys.branch(ex)
        keys.skip_retired(ex, branch, keep=change_id)  # other changes' deprecated markers
        evs = journal.at(branch.next_key())
        if evs and is_marker(evs[0]) and evs[0].name == change_id:
            keys.take(ex)  # recorded after the change: consume its marker
            return True
        if evs:
            # recorded before the change (another operation is journaled here): the old path,
            # nothing consumed; deprecate_patch takes the new path whatever the history
            return deprecated
        key = keys.take(ex)  # live, or replaying past the end of the history
        journal.buffer(key, MARKER, change_id, '{"deprecated":true}' if deprecated else '{"deprecated":false}')
        return True
