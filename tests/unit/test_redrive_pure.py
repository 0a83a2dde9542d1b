"""The pure parts of re-driving runs: which events replay reads after resumes, and the
workflow glob of the CLI's bulk forms."""

from __future__ import annotations

from durable.runtime.journal import replayable
from durable.runtime.redrive import like_pattern
from durable.store.rows import Event


def _ev(seq: int, kind: str = "step_completed", **data: object) -> Event:
    return Event(seq=seq, pos=seq, kind=kind, name="s", data=dict(data))


def test_replay_skips_what_each_resume_superseded_and_keeps_the_markers() -> None:
    history = [_ev(1), _ev(2, "step_failed"), _ev(3, "resumed", superseded_from=2), _ev(4), _ev(5, "step_failed"),
               _ev(6, "resumed", superseded_from=5), _ev(7)]
    assert [e.seq for e in replayable(history)] == [1, 3, 4, 6, 7]


def test_a_resume_that_superseded_nothing_keeps_everything() -> None:
    history = [_ev(1), _ev(2, "resumed", superseded_from=2), _ev(3)]
    assert replayable(history) == history
    plain = [_ev(1), _ev(2)]
    assert replayable(plain) is plain


def test_workflow_globs_become_like_patterns() -> None:
    assert like_pattern("orders.*") == "orders.%"
    assert like_pattern("a?c") == "a_c"
    assert like_pattern("100%_off\\x") == "100\\%\\_off\\\\x"
    assert like_pattern(None) == like_pattern("") == "%"
