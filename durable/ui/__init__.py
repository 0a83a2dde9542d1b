"""The web console (issue 16): ``create_app(engine)`` is a mountable ASGI app (Starlette +
Jinja2; install ``durable[ui]``). Pages: runs, one run (timeline, tree), workers and queues;
actions: cancel, signal, resume, restart, fork, behind an access token and CSRF checks."""

from .app import create_app

__all__ = ["create_app"]
