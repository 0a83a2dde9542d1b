"""The console's actions (POST ``/runs/{id}/{action}``): cancel, signal, resume, restart,
fork, through the same engine API as the CLI. Each one checks, in this order, and writes
nothing when a check fails: read-only mode (403), the access token (401), the CSRF token
(403), the run (404), its input (400), its state (409: a finished run cannot be cancelled
or signalled, a completed one not resumed)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import (ConfigurationError, ForkPositionError, PayloadError, RunFinishedError, RunNotFoundError,
                      RunNotResumableError)
from .console import Console, parse_run_id

FINISHED = ("completed", "failed", "cancelled")
ACTIONS = ("cancel", "signal", "resume", "restart", "fork")
MAX_NAME = 200


class Refused(Exception):
    """An action the console will not do: the status, a title and what to do instead."""

    def __init__(self, status: int, title: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.hint = status, title, message, hint


async def run_action(console: Console, request: Request) -> Response:
    name = request.path_params["action"]
    text = request.path_params["run_id"]
    base = console.base(request)
    back = f"{base}/runs/{text}"
    if name not in ACTIONS:
        return console.problem(request, 404, "No such action", f"There is no action {name!r}.",
                               hint=f"The actions are {', '.join(ACTIONS)}.", back=back)
    if console.guard.read_only:
        return console.problem(request, 403, "Read-only console", "This console was started read-only: it shows "
                               "runs but does not change them.", hint="Use the CLI (durable cancel|signal|resume…) "
                               "or a console started without read-only mode.", back=back)
    if not console.guard.authenticated(request):
        return console.problem(request, 401, "Sign in to act", "Actions need the console's access token.",
                               hint="Sign in with the token (the login page), or send it as "
                                    "'Authorization: Bearer TOKEN'.", back=f"{base}/login")
    form = await request.form()
    if not console.guard.csrf_ok(request, _field(form, "csrf")):
        return console.problem(request, 403, "Form expired", "The form's CSRF token is missing or wrong: "
                               "nothing was changed.", hint="Reload the run's page and try again.", back=back)
    rid = parse_run_id(text)
    if rid is None:
        return console.not_found(request, repr(text))
    try:
        target = await _act(console, name, rid, form)
    except RunNotFoundError:
        return console.not_found(request, str(rid))
    except Refused as exc:
        return console.problem(request, exc.status, exc.title, exc.message, hint=exc.hint, back=back)
    return RedirectResponse(f"{base}/runs/{target}", status_code=303)


async def _act(console: Console, name: str, rid: uuid.UUID, form: FormData) -> str:
    """Do the action; the run page to show next (with its notice)."""
    engine = console.engine
    info = await engine.info(rid)
    status = info.status
    if name in ("cancel", "signal") and status == "continued":
        raise Refused(409, "Run continued as new", f"Run {rid} continued as new as run {info.continued_to}: "
                                                   f"{name} the live run of its chain; nothing was changed.")
    if name == "cancel":
        if status in FINISHED:
            raise Refused(409, "Nothing to cancel", f"Run {rid} already {status}; nothing was changed.")
        graceful = _field(form, "graceful") in ("1", "on", "true")
        res = await engine.cancel(rid, graceful=graceful, reason=_field(form, "reason") or "cancelled from the console")
        notice = "cancel_asked" if graceful and not res.already_finished else "cancelled"
        return f"{rid}?notice={notice}"
    if name == "signal":
        signal, payload, delivery = _signal_form(form)
        if status in FINISHED:
            raise Refused(409, "Run finished", f"Run {rid} already {status}: signals go to runs still in flight; "
                                               "nothing was sent.")
        try:
            sent = await engine.signal(rid, signal, payload, delivery_id=delivery)
        except RunFinishedError as exc:
            raise Refused(409, "Run finished", f"{exc}; nothing was sent.") from None
        except PayloadError as exc:
            raise Refused(400, "Payload refused", str(exc)) from None
        return f"{rid}?notice={'signalled' if sent else 'signal_duplicate'}"
    try:
        if name == "resume":
            handle = await engine.resume(rid)
            return f"{handle.run_id}?notice=resumed"
        if name == "restart":
            handle = await engine.restart(rid)
            return f"{handle.run_id}?notice=restarted"
        at = _field(form, "at") or ""
        if not at.strip().isdigit():
            raise Refused(400, "Bad position", f"fork at {at!r}: give the number of history events to keep "
                                               "(0 or more; the timeline numbers them by seq).")
        handle = await engine.fork(rid, at=int(at))
        return f"{handle.run_id}?notice=forked"
    except RunNotResumableError as exc:
        raise Refused(409, "Cannot resume", str(exc)) from None
    except ForkPositionError as exc:
        raise Refused(400, "Bad position", str(exc)) from None
    except ConfigurationError as exc:
        raise Refused(400, "Refused", str(exc)) from None


def _signal_form(form: FormData) -> tuple[str, Any, str | None]:
    name = (_field(form, "name") or "").strip()
    if not name or len(name) > MAX_NAME:
        raise Refused(400, "Signal name needed", f"Give the signal's name (1 to {MAX_NAME} characters), as the "
                                                 "workflow waits for it: ctx.wait_signal(\"NAME\").")
    text = (_field(form, "payload") or "").strip()
    payload: Any = None
    if text:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Refused(400, "Payload is not JSON", f"The signal's payload is not JSON: {exc.msg} at line "
                          f"{exc.lineno} column {exc.colno}; nothing was sent.",
                          hint='Write JSON, e.g. {"approved": true}, 42, or "text" in double quotes; '
                               "leave it empty for no payload.") from None
    delivery = (_field(form, "delivery_id") or "").strip() or None
    return name, payload, delivery


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None
