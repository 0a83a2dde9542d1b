"""The console's pages (GET): runs, one run, workers and queues, login. Each page's
``<main id="main" data-live=...>`` can be fetched alone with ``?fragment=main`` (the live
updates swap it in)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import ConfigurationError, RunNotFoundError, SearchAttributeError
from . import pages
from .auth import safe_next
from .console import Console, parse_run_id
from .filters import BadFilter, runs_query

NOTICES = {  # ?notice= after an action (a fixed text: nothing from the URL is shown)
    "cancelled": "Run cancelled (with its in-flight descendants).",
    "cancel_asked": "Asked the run to cancel; it ends as cancelled after its cleanup.",
    "signalled": "Signal sent.",
    "signal_duplicate": "A signal with this delivery id was already delivered; not sent again.",
    "resumed": "Run resumed: it runs again from where it failed.",
    "restarted": "Restarted: this is the new run.",
    "forked": "Forked: this is the new run.",
}


async def runs_page(console: Console, request: Request) -> Response:
    if not console.guard.may_view(request):
        return console.login_redirect(request)
    try:
        rq = runs_query(request.query_params)
    except BadFilter as exc:
        return console.problem(request, 400, "Bad filter", str(exc),
                               hint=f"Fix {exc.name}= on the runs page, or clear the filters.",
                               back=console.base(request) + "/")
    try:
        view = await pages.runs_view(console.engine, rq)
    except SearchAttributeError as exc:
        return console.problem(request, 400, "Bad filter", f"attr: {exc}", back=console.base(request) + "/")
    except ConfigurationError as exc:  # a filter the engine refused (it read nothing)
        return console.problem(request, 400, "Bad filter", str(exc), back=console.base(request) + "/")
    return console.render(request, "runs.html", {"q": rq, "v": view}, live="runs")


async def run_page(console: Console, request: Request) -> Response:
    if not console.guard.may_view(request):
        return console.login_redirect(request)
    text = request.path_params["run_id"]
    rid = parse_run_id(text)
    if rid is None:
        return console.not_found(request, f"{text!r} (not a run id: a run id looks like "
                                          "3f2b9c1e-8d4a-4f0e-9b7c-2a1d5e6f7a8b)")
    try:
        view = await pages.run_view(console.engine, rid)
    except RunNotFoundError:
        return console.not_found(request, str(rid))
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return console.render(request, "run.html", {"v": view, "r": view.run, "notice": notice}, live="run")


async def workers_page(console: Console, request: Request) -> Response:
    if not console.guard.may_view(request):
        return console.login_redirect(request)
    view = await pages.workers_view(console.engine)
    return console.render(request, "workers.html", {"v": view}, live="workers")


async def login_page(console: Console, request: Request) -> Response:
    """The login form; ``/login?token=...`` signs in directly (the link ``durable ui`` prints)."""
    base = console.base(request)
    target = safe_next(request.query_params.get("next"), base)
    given = request.query_params.get("token")
    if given is not None:
        if console.guard.token_ok(given):
            response = RedirectResponse(target, status_code=303)
            console.guard.set_session(response, request)
            return response
        return console.render(request, "login.html", {"next": target, "error": "That token is not this "
                              "console's token."}, status=401)
    return console.render(request, "login.html", {"next": target, "error": None})


async def login_submit(console: Console, request: Request) -> Response:
    form = await request.form()
    base = console.base(request)
    target = safe_next(str(form.get("next") or ""), base)
    if not console.guard.csrf_ok(request, _text(form.get("csrf"))):
        return console.problem(request, 403, "Form expired", "The form's CSRF token is missing or wrong.",
                               hint="Reload the login page and sign in again.", back=base + "/login")
    if not console.guard.token_ok(_text(form.get("token"))):
        return console.render(request, "login.html", {"next": target, "error": "That token is not this console's "
                              "token (durable ui prints it, or the service that mounts the console sets it)."},
                              status=401)
    response = RedirectResponse(target, status_code=303)
    console.guard.set_session(response, request)
    return response


async def logout(console: Console, request: Request) -> Response:
    form = await request.form()
    if not console.guard.csrf_ok(request, _text(form.get("csrf"))):
        return console.problem(request, 403, "Form expired", "The form's CSRF token is missing or wrong.",
                               hint="Reload the page and try again.", back=console.base(request) + "/")
    response = RedirectResponse(console.base(request) + "/login", status_code=303)
    console.guard.clear_session(response, request)
    return response


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
