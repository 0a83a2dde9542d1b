"""The web console as a mountable ASGI app (Starlette + Jinja2; templates and static files
ship inside the package; no CDN, works offline).

A service that embeds the engine mounts it::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from durable.ui import create_app

    app = Starlette(routes=[Mount("/durable", create_app(engine, token=TOKEN))])

``durable ui`` serves it alone (loopback by default), and ``durable-dispatcher --ui`` next
to a dispatcher. The live updates (``/events``, server-sent) come from the ``hub`` when one
is given."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..engine import Engine
from ..errors import DurableError
from . import actions, views
from .auth import Guard
from .console import HERE, Console
from .live import LiveHub

log = logging.getLogger(__name__)

Handler = Callable[[Console, Request], Awaitable[Response]]


def create_app(engine: Engine, *, token: str | None = None, read_only: bool = False,
               hub: LiveHub | None = None) -> Starlette:
    """The console for ``engine`` (an open Engine; ``execute=False`` is enough).

    ``token``: the access token. Given, every page needs it (a bearer header, or the login
    form's HttpOnly cookie); every action always needs it: without one the app makes a
    random token (``app.state.token``). ``read_only=True`` hides the actions and refuses
    them (403). ``hub``: the live-update hub whose ``routes()`` serve ``/events``."""
    guard = Guard(token, read_only=read_only)
    console = Console(engine, guard)

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if engine.pool is None:
                return console.problem(request, 503, "Engine not open", "The console's engine is not open yet "
                                       "(or was closed).", hint="Open it (async with engine: ...) for as long as "
                                       "the app serves, e.g. in the app's lifespan; see the README's Web console.")
            try:
                return await handler(console, request)
            except DurableError as exc:  # the engine's typed errors: a message, never a traceback
                log.warning("console request failed: %s", exc, extra={"path": request.url.path})
                return console.problem(request, 503 if "database" in str(exc).lower() else 500,
                                       "Could not do that", str(exc), back=console.base(request) + "/")
        return endpoint

    routes: list[BaseRoute] = [
        Route("/", bind(views.runs_page), methods=["GET"], name="runs"),
        Route("/runs/{run_id}", bind(views.run_page), methods=["GET"], name="run"),
        Route("/runs/{run_id}/{action}", bind(actions.run_action), methods=["POST"], name="action"),
        Route("/workers", bind(views.workers_page), methods=["GET"], name="workers"),
        Route("/login", bind(views.login_page), methods=["GET"], name="login"),
        Route("/login", bind(views.login_submit), methods=["POST"], name="login_submit"),
        Route("/logout", bind(views.logout), methods=["POST"], name="logout"),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    if hub is not None:  # the live events are shown to whom the pages are (same token, same cookie)
        hub.authorize = guard.may_view
        routes += hub.routes()

    async def not_found(request: Request, exc: Any) -> Response:
        return console.problem(request, 404, "Not found", f"There is no page {request.url.path!r} here.",
                               hint="The pages are the runs list, a run's page and workers.",
                               back=console.base(request) + "/")

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.token = guard.token
    app.state.read_only = read_only
    return app
