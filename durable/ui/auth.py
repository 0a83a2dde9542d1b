"""The web console's safety checks: the access token (a bearer header, or the HttpOnly
session cookie the login form sets), CSRF tokens on every POST (signed double submit: a
random cookie and, in each form, its HMAC under a key only the server holds), read-only
mode. Every comparison is constant-time (:func:`hmac.compare_digest`).

The token is required for every action always, and for every page when the app was given
one (``durable ui`` gives one for any non-loopback bind). An app created without a token
makes a random one (``app.state.token``): actions need it even then."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ConfigurationError

SESSION_COOKIE = "durable_session"
CSRF_COOKIE = "durable_csrf"
CSRF_FIELD = "csrf"


class Guard:
    """The checks of one app (its token, its keys)."""

    def __init__(self, token: str | None, *, read_only: bool) -> None:
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise ConfigurationError("the console's token must be a string of at least 8 characters, e.g. "
                                     "secrets.token_urlsafe(24); or leave it out (pages open, actions need a "
                                     "random token: app.state.token)")
        self.pages_need_token = token is not None
        self.read_only = read_only
        self.token = token if token is not None else secrets.token_urlsafe(24)
        key = hashlib.sha256(b"durable-ui:" + self.token.encode()).digest()
        # the session cookie's value: derived from the token, never the token itself
        self._session = hmac.new(key, b"session", hashlib.sha256).hexdigest()
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()

    # --- the access token ------------------------------------------------------------------

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def authenticated(self, request: Request) -> bool:
        """A bearer header with the token, or the session cookie set at login."""
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self.token_ok(auth[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode())

    def may_view(self, request: Request) -> bool:
        return not self.pages_need_token or self.authenticated(request)

    def set_session(self, response: Response, request: Request) -> None:
        response.set_cookie(SESSION_COOKIE, self._session, httponly=True, samesite="strict", path=_path(request),
                            secure=request.url.scheme == "https")

    def clear_session(self, response: Response, request: Request) -> None:
        response.delete_cookie(SESSION_COOKIE, path=_path(request), httponly=True, samesite="strict")

    # --- CSRF ----------------------------------------------------------------------------------

    def csrf_nonce(self, request: Request) -> tuple[str, bool]:
        """The request's CSRF cookie, or a new one (True: set it on the response)."""
        nonce = request.cookies.get(CSRF_COOKIE)
        if nonce and 16 <= len(nonce) <= 100:
            return nonce, False
        return secrets.token_urlsafe(24), True

    def csrf_field(self, nonce: str) -> str:
        """The value forms carry: the HMAC of the cookie's nonce (a page on another site can
        neither read the cookie nor compute this)."""
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()

    def set_csrf(self, response: Response, request: Request, nonce: str) -> None:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", path=_path(request),
                            secure=request.url.scheme == "https")

    def csrf_ok(self, request: Request, given: str | None) -> bool:
        nonce = request.cookies.get(CSRF_COOKIE)
        if not nonce or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_field(nonce).encode())


def _path(request: Request) -> str:
    """Cookies are scoped to where the app is mounted."""
    return (request.scope.get("root_path") or "").rstrip("/") + "/"


def safe_next(target: str | None, base: str) -> str:
    """Where to go after login: a path inside the app (never another site)."""
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and target.isprintable() and not any(c.isspace() for c in target)):
        return target
    return base + "/"
