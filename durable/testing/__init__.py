"""Helpers for testing workflows.

- :class:`TimeControl` moves the engine's clock forward (against a real PostgreSQL).
- :class:`Replayer` replays stored run histories (from the database, or exported with
  ``durable export RUN > run.json``) against the code registered now and reports the
  first divergence: a CI job that proves a deploy is safe for the runs in flight.
"""

from ..runtime.history import RunHistory
from .replayer import Divergence, Replayer, ReplayReport, ReplayResult
from .time_control import TimeControl

__all__ = ["TimeControl", "Replayer", "ReplayResult", "ReplayReport", "Divergence", "RunHistory"]
