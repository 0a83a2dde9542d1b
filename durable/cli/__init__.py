"""The operator CLI (``durable ...``) and the demo."""

from .commands import main

__all__ = ["main"]
