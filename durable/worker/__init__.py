"""Background concerns of a process that executes runs: each a small loop with start/stop.

- :mod:`.claimer`   batch claims of due and rescued runs (poll fallback + kicks)
- :mod:`.listener`  the dedicated LISTEN connection (wakes, new runs, results)
- :mod:`.heartbeat` one batched lease renewal per beat
"""
from .claimer import Claimer
from .heartbeat import Heartbeat
from .listener import Listener

__all__ = ["Claimer", "Heartbeat", "Listener"]
