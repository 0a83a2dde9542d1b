"""What every page and action of the console shares: the engine, the safety checks
(durable/ui/auth.py), the templates (Jinja2, autoescaped: every payload is escaped), and
the answers that are not a page's own (login redirects, 400/401/403/404/409 pages)."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlencode
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..durations import ago, took
from ..engine import Engine
from .auth import Guard
from .format import FILTERS

HERE = Path(__file__).parent
STATUS_ORDER = ("pending", "running", "suspended", "completed", "failed", "cancelled", "continued")
LIVE = {"runs", "run", "workers"}


class Console:
    """One app's state: its engine, guard and templates."""

    def __init__(self, engine: Engine, guard: Guard) -> None:
        self.engine = engine
        self.guard = guard
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(FILTERS)
        self.env.globals.update(ago=ago, took=took, STATUS_ORDER=STATUS_ORDER)

    @staticmethod
    def base(request: Request) -> str:
        """The prefix of the app's own links (where it is mounted)."""
        return str(request.scope.get("root_path") or "").rstrip("/")

    def render(self, request: Request, template: str, context: dict[str, Any], *, status: int = 200,
               live: str | None = None) -> Response:
        """A page (or, with ``?fragment=main``, only the inner HTML of its ``<main>``)."""
        nonce, fresh = self.guard.csrf_nonce(request)
        ctx = {"base": self.base(request), "request": request, "read_only": self.guard.read_only,
               "csrf": self.guard.csrf_field(nonce), "signed_in": self.guard.authenticated(request),
               "needs_token": self.guard.pages_need_token, "live": live, **context}
        fragment = request.query_params.get("fragment") == "main"
        name = template.replace(".html", "_main.html") if fragment and live in LIVE else template
        response = HTMLResponse(self.env.get_template(name).render(ctx), status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'")
        if fresh:
            self.guard.set_csrf(response, request, nonce)
        return response

    def problem(self, request: Request, status: int, title: str, message: str, *,
                hint: str | None = None, back: str | None = None) -> Response:
        """An error page (or message) that says what is wrong and what to do."""
        return self.render(request, "problem.html", {"status": status, "title": title, "message": message,
                                                     "hint": hint, "back": back}, status=status)

    def login_redirect(self, request: Request) -> Response:
        if request.query_params.get("fragment") == "main":
            return self.problem(request, 401, "Sign in needed", "This console needs its access token.")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{self.base(request)}/login?{urlencode({'next': target})}", status_code=303)

    def not_found(self, request: Request, what: str) -> Response:
        return self.problem(request, 404, "Run not found", f"There is no run {what} on this schema.",
                            hint="Check the id (the full id, as on the runs page), that the console watches the "
                                 "schema the run was started on, and that retention (durable gc) did not delete "
                                 "it after it finished.", back=self.base(request) + "/")


def parse_run_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None

