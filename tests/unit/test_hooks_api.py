"""The hook handler API (durable.observe.hooks), no engine needed: on/off, exact names,
dotted-prefix and catch-all patterns, the decorator form, idempotent detach, refusals of
bad input, and a raising handler that is logged and skipped. (Events emitted by a real
engine: tests/integration/test_telemetry.py.)"""

from __future__ import annotations

import pytest

from durable.errors import ConfigurationError
from durable.observe import hooks


def test_handler_api_patterns_and_detach() -> None:
    got: list[tuple[str, str]] = []
    detach_exact = hooks.on("child.started", lambda e: got.append(("exact", e.name)))
    detach_prefix = hooks.on("child.*", lambda e: got.append(("prefix", e.name)))

    @hooks.on("*")
    def everything(event: hooks.HookEvent) -> None:
        got.append(("all", event.name))

    try:
        assert hooks.listening("child.started") and hooks.listening("anything.at.all")
        hooks.emit("child.started", parent_run_id=1, child_run_id=2, workflow="w", parent_workflow="p")
        hooks.emit("children.started")  # 'child.*' is a dotted prefix: no match
        hooks.emit("step.completed", step="s")
        assert got == [("exact", "child.started"), ("prefix", "child.started"), ("all", "child.started"),
                       ("all", "children.started"), ("all", "step.completed")]
        got.clear()
        detach_exact()
        detach_exact()  # idempotent
        hooks.off("*", everything)
        hooks.emit("child.failed", error_type="E")
        assert got == [("prefix", "child.failed")]
        event = hooks.HookEvent("x.y", {"a": 1})
        assert event["a"] == 1 and event.get("b", 2) == 2
    finally:
        detach_prefix()
        hooks.off("*", everything)
    got.clear()
    hooks.emit("child.failed")
    assert got == []


def test_handler_api_refuses_bad_input() -> None:
    async def coroutine_handler(event: hooks.HookEvent) -> None:
        return None

    for bad_name in ("", "child*", "child.*.*", ".*", 42):
        with pytest.raises(ConfigurationError):
            hooks.on(bad_name, print)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        hooks.on("child.started", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="async"):
        hooks.on("child.started", coroutine_handler)
    assert not any(fn in (print, coroutine_handler) for _, fn in hooks._handlers)


def test_handler_fields_reach_the_handler_and_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict] = []

    def broken(event: hooks.HookEvent) -> None:
        raise RuntimeError("nope")

    d1 = hooks.on("run.completed", broken)
    d2 = hooks.on("run.completed", lambda e: seen.append(dict(e.fields)))  # after the broken one
    try:
        hooks.emit("run.completed", run_id=1, workflow="w", queue="q", duration_s=0.5)
    finally:
        d1()
        d2()
    assert seen == [{"run_id": 1, "workflow": "w", "queue": "q", "duration_s": 0.5}]
    assert any("raised; ignored" in r.getMessage() for r in caplog.records if r.name == "durable.hooks")
