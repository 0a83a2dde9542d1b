"""Connection plumbing: DSN validation and resolution, bounded connects, pools.

Every connection durable opens has ``search_path`` set to durable's schema through the
libpq ``options`` parameter, so unqualified table and function names in queries (and
inside the schema's plpgsql functions) resolve to that schema, and the setting survives
``DISCARD ALL``/pool resets because it is a connection default, not a ``SET``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from ..errors import ConfigurationError, ContentionError, DatabaseUnavailableError, DurableError
from . import embedded

__all__ = [
    "connect",
    "connect_sync",
    "describe_dsn",
    "masked",
    "open_pool",
    "resolve_dsn",
    "search_path_options",
    "validate_dsn",
]

logger = logging.getLogger(__name__)

EXPECTED_FORM = (
    "expected a URI like postgresql://user:pass@host:5432/dbname "
    "or key/value pairs like 'host=localhost port=5432 dbname=app user=app password=...'"
)

_MASK = "***"
_URI_PREFIX = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
# user:password@ inside a URI (structural; the literal pass below catches the rest).
_URI_PASSWORD = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@\s/]+)(?=@)")
# password=... as a URI query parameter or a key/value pair (possibly quoted).
_KV_PASSWORD = re.compile(
    r"(?P<pre>(?:^|[\s?&\"'])password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^\s&#\"']+)", re.IGNORECASE
)


# --- masking and description ----------------------------------------------------------


def _secrets(dsn: str) -> list[str]:
    """Password strings that appear literally in ``dsn`` (best effort, also for malformed DSNs)."""
    found: set[str] = set()
    m = _URI_PREFIX.match(dsn)
    if m:
        rest = dsn[m.end():]
        head = re.split(r"[?#]", rest, maxsplit=1)[0]
        at_last, at_first = head.rfind("@"), head.find("@")
        for at in {at_last, at_first}:
            if at >= 0:
                userinfo = head[:at]
                if ":" in userinfo:
                    found.add(userinfo.split(":", 1)[1])
    for m2 in _KV_PASSWORD.finditer(dsn):
        pw = m2.group("pw")
        found.add(pw)
        if pw.startswith("'"):
            found.add(pw.strip("'"))
    for pw in list(found):
        found.add(unquote(pw))
    return sorted((s for s in found if s), key=len, reverse=True)


def _mask_text(text: str, dsn: str) -> str:
    """Remove every password of ``dsn`` from ``text`` (e.g. a libpq error quoting the DSN)."""
    for secret in _secrets(dsn):
        pattern = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])" if len(secret) < 4 else re.escape(secret)
        text = re.sub(pattern, _MASK, text)
    text = _URI_PASSWORD.sub(lambda m: m.group("pre") + _MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + _MASK, text)
    return text


def masked(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, safe to log or show in errors."""
    return _mask_text(dsn, dsn)


def describe_dsn(dsn: str) -> str:
    """A human summary of where a DSN points (host, port, database, user), without secrets."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return masked(dsn)
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or "(current OS user)")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    if not host:
        where = f"the default local socket, port {port}"
    elif host.startswith("/"):
        where = f"socket directory {host}, port {port}"
    else:
        where = f"host {host}, port {port}"
    return f"{where}, database {dbname!r}, user {user!r}"


# --- validation and resolution --------------------------------------------------------


def validate_dsn(dsn: str) -> str:
    """Check that ``dsn`` parses as a libpq connection string; return it unchanged.

    Raises ConfigurationError (password masked) when it is empty or malformed.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigurationError(f"the PostgreSQL DSN is empty: {EXPECTED_FORM}")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        problem = _mask_text(str(exc).strip(), dsn)
        raise ConfigurationError(f"invalid PostgreSQL DSN {masked(dsn)!r}: {problem}; {EXPECTED_FORM}") from None
    port = params.get("port")
    if port is not None:
        for p in str(port).split(","):
            if p and not (p.isdigit() and 0 < int(p) < 65536):
                raise ConfigurationError(
                    f"invalid PostgreSQL DSN {masked(dsn)!r}: port {p!r} is not a number between 1 and "
                    f"65535; {EXPECTED_FORM}"
                )
    timeout = params.get("connect_timeout")
    if timeout is not None:
        try:
            float(timeout)
        except ValueError:
            raise ConfigurationError(
                f"invalid PostgreSQL DSN {masked(dsn)!r}: connect_timeout {timeout!r} is not a number"
            ) from None
    return dsn


async def resolve_dsn(dsn: str | None, *, data_dir: str | None = None) -> str:
    """Pick the database: the explicit ``dsn``, else env ``DURABLE_DSN``, else embedded PostgreSQL.

    Starting the embedded server blocks (initdb on first use), so it runs in a thread.
    """
    if dsn is not None:
        return validate_dsn(dsn)
    env = os.environ.get("DURABLE_DSN")
    if env:
        try:
            return validate_dsn(env)
        except ConfigurationError as exc:
            raise ConfigurationError(f"DURABLE_DSN: {exc}") from None
    return await asyncio.to_thread(embedded.start_embedded, data_dir)


# --- connecting -----------------------------------------------------------------------


def search_path_options(schema: str, existing: str | None = None) -> str:
    """The libpq ``options`` value setting ``search_path`` to ``schema`` (quoted as an
    identifier, spaces and backslashes escaped for the server's option splitter), appended
    to any ``options`` the DSN already had."""
    if not schema:
        raise ConfigurationError("the schema name is empty")
    if "\x00" in schema:
        raise ConfigurationError("the schema name contains a NUL character")
    ident = '"' + schema.replace('"', '""') + '"'
    escaped = re.sub(r"([\\\s])", r"\\\1", ident)
    opt = f"-c search_path={escaped}"
    return f"{existing} {opt}" if existing else opt


def _connect_kwargs(dsn: str, schema: str, timeout: float) -> dict[str, Any]:
    if timeout <= 0:
        raise ConfigurationError(f"the connect timeout must be positive (got {timeout})")
    params = conninfo_to_dict(dsn)
    return {
        "options": search_path_options(schema, params.get("options")),  # type: ignore[arg-type]
        # libpq's connect_timeout is whole seconds (minimum 2); asyncio.wait_for bounds it exactly.
        "connect_timeout": max(2, math.ceil(timeout)),
    }


def _unavailable(
    dsn: str, timeout: float, cause: BaseException | None, what: str = "connect"
) -> DatabaseUnavailableError:
    if cause is None or (isinstance(cause, TimeoutError) and not str(cause).strip()):
        reason = f"no answer within {timeout:g} s"
    else:
        reason = _mask_text(" ".join(str(cause).split()), dsn) or type(cause).__name__
    return DatabaseUnavailableError(
        f"could not {what} to PostgreSQL at {describe_dsn(dsn)} (DSN {masked(dsn)}) within the "
        f"{timeout:g} s connect timeout: {reason}. Check that the server is running and reachable "
        "from this host (host, port, firewall), that the database and user exist and the password "
        "is right, or raise the connect timeout (connect_timeout_s) on a slow network."
    )


async def connect(
    dsn: str, *, schema: str, timeout: float, autocommit: bool = True
) -> psycopg.AsyncConnection[Any]:
    """Open an async connection with ``search_path`` = ``schema``, bounded by ``timeout`` seconds."""
    validate_dsn(dsn)
    kwargs = _connect_kwargs(dsn, schema, timeout)
    try:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(dsn, autocommit=autocommit, **kwargs), timeout
        )
    except (psycopg.OperationalError, TimeoutError, OSError) as exc:
        raise _unavailable(dsn, timeout, exc) from None


def connect_sync(dsn: str, *, schema: str, timeout: float, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Blocking twin of :func:`connect` (CLI, Prometheus collector). libpq's timeout has a
    2 s floor, so a shorter ``timeout`` waits up to 2 s."""
    validate_dsn(dsn)
    kwargs = _connect_kwargs(dsn, schema, timeout)
    try:
        return psycopg.Connection.connect(dsn, autocommit=autocommit, **kwargs)
    except (psycopg.OperationalError, TimeoutError, OSError) as exc:
        raise _unavailable(dsn, timeout, exc) from None


async def open_pool(
    dsn: str,
    *,
    schema: str,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float,
    name: str | None = None,
) -> psycopg_pool.AsyncConnectionPool:
    """Open a pool of autocommit connections with ``search_path`` = ``schema``.

    Waits up to ``timeout`` for ``min_size`` connections; ``timeout`` is also the pool's
    default wait for a free connection. On failure the pool is closed and
    DatabaseUnavailableError says why.
    """
    validate_dsn(dsn)
    if min_size < 0 or max_size < max(1, min_size):
        raise ConfigurationError(f"pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1 "
                                 f"(got min_size={min_size}, max_size={max_size})")
    kwargs = _connect_kwargs(dsn, schema, timeout)
    kwargs["autocommit"] = True
    # Probe with one plain connection first: it is cancellable at the deadline and fails
    # with libpq's reason, while a pool only reports "incomplete" and its close() waits
    # for workers stuck in a connect attempt.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    probe = await connect(dsn, schema=schema, timeout=timeout)
    await probe.close()
    pool = psycopg_pool.AsyncConnectionPool(
        dsn,
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name or f"durable-{schema}",
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=max(1.0, deadline - loop.time()))
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, TimeoutError, OSError) as exc:
        await pool.close(timeout=1.0)
        raise _unavailable(dsn, timeout, exc, what="open a connection pool") from None
    except BaseException:
        await pool.close(timeout=1.0)
        raise
    logger.debug("pool %s open on %s (schema %s)", pool.name, describe_dsn(dsn), schema)
    return pool


# --- errors -----------------------------------------------------------------------------

Conn = psycopg.AsyncConnection[Any]
Pool = psycopg_pool.AsyncConnectionPool

# The database is unreachable (a lost connection, a server restart, no free connection in
# time): an execution that meets one stops and its run resumes later, elsewhere or here.
UNAVAILABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def is_outage(exc: BaseException) -> bool:
    """A connection-level failure (one that hits every execution at once), not a statement's."""
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


# Deadlocks and serialization failures roll the whole statement back, so running it again
# is safe. The engine's lock order (sql/0004_concurrency.sql) leaves none in its own
# statements; these come from what users do around them (their own transactions).
TRANSIENT = ("40P01", "40001")
RETRIES = 5

_T = TypeVar("_T")


async def run_retrying(pool: Any, fn: Callable[[Conn], Awaitable[_T]], *, what: str,
                       retries: int = RETRIES) -> _T:
    """``await fn(conn)`` on a pooled connection, again (bounded, with jittered backoff)
    when it fails with a deadlock or serialization failure; then :class:`ContentionError`."""
    delay = 0.01
    for attempt in range(1, retries + 1):
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except psycopg.Error as exc:
            if exc.sqlstate not in TRANSIENT:
                raise
            if attempt == retries:
                raise ContentionError(
                    f"{what} failed {retries} times on concurrent transactions ({exc.sqlstate}: "
                    f"{exc.diag.message_primary or exc}); nothing was written, retry the call") from None
            logger.debug("%s: %s, retrying", what, exc.sqlstate)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")


def typed_error(exc: BaseException, what: str) -> DurableError:
    """A driver error as a typed DurableError (the database unreachable, or something else)."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return DatabaseUnavailableError(f"{what} failed: no database connection was free in time ({exc}); "
                                        "retry, or raise pool_size")
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailableError(f"{what} failed: the database is unreachable ({exc}); retry when it is back")
    return DatabaseUnavailableError(f"{what} failed on the database ({type(exc).__name__}: {exc})")


async def run_typed(pool: Any, fn: Callable[[Conn], Awaitable[_T]], *, what: str) -> _T:
    """``await fn(conn)`` with transient conflicts retried, and every driver error turned into
    a typed :class:`~durable.errors.DurableError` naming ``what`` (the public API's path)."""
    try:
        return await run_retrying(pool, fn, what=what)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise typed_error(exc, what) from exc
