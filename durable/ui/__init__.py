"""The web console (issue 16): ``create_app(engine)`` is a mountable ASGI app (Starlette +
Jinja2; install ``durable[ui]``). Pages: runs, one run (timeline, tree), workers and queues;
actions: cancel, signal, resume, restart, fork, behind an access token and CSRF checks.
Its live updates: :class:`durable.ui.live.LiveHub`; served by ``durable ui`` or
``durable-dispatcher --ui`` (:mod:`durable.ui.serve`).

``create_app`` is imported on first use: :mod:`durable.ui.bind` (where the console may
listen, checked by the dispatcher's settings) must import without the [ui] extra."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app  # the web dependencies, on first use (see above)
        return create_app
    raise AttributeError(f"module 'durable.ui' has no attribute {name!r}")
