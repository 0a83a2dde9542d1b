"""Where the console listens, and the rule for it: loopback by default; any other address
only with an access token (``--token`` / ``DURABLE_UI_TOKEN``). Pure functions (no web
dependencies), shared by ``durable ui`` and ``durable-dispatcher --ui``."""

from __future__ import annotations

import ipaddress

from ..errors import ConsoleBindError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484
TOKEN_ENV = "DURABLE_UI_TOKEN"
MIN_TOKEN = 8
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (a name other than localhost is not trusted to be)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def parse_bind(text: str, *, what: str = "--ui") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); the host defaults to loopback."""
    raw = text.strip()
    host, port_text = DEFAULT_HOST, raw
    if raw.startswith("["):
        end = raw.find("]")
        if end > 0 and raw[end + 1:end + 2] == ":":
            host, port_text = raw[1:end], raw[end + 2:]
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConsoleBindError(f"{what} {text!r} is not [HOST:]PORT: give e.g. {what} 8484 (loopback) or "
                               f"{what} 0.0.0.0:8484 (with a token); the port is 0-65535 (0: a free one)")
    return host, int(port_text)


def check_token(host: str, token: str | None, *, flag: str = "--token") -> None:
    """Refuse a bind beyond loopback without a token, and a token too short to be one."""
    if token is not None and len(token) < MIN_TOKEN:
        raise ConsoleBindError(f"the console's access token ({flag} / {TOKEN_ENV}) is {len(token)} characters; "
                               f"give at least {MIN_TOKEN}, e.g. the output of {TOKEN_HINT}", host=host)
    if token is None and not is_loopback(host):
        raise ConsoleBindError(f"the console would listen on {host}, beyond this machine, without an access "
                               f"token: pass {flag} TOKEN or set {TOKEN_ENV} (e.g. to the output of {TOKEN_HINT}), "
                               f"or bind a loopback address such as {DEFAULT_HOST}", host=host)


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"
