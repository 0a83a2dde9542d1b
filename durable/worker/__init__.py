"""Background concerns of a process that executes runs: each a small loop with start/stop.

- :mod:`.claimer`   batch claims of due and rescued runs (poll fallback + kicks)
- :mod:`.listener`  the dedicated LISTEN connection (wakes, new runs, results)
- :mod:`.heartbeat` one batched lease renewal per beat
- :mod:`.retention` periodic gc of old finished runs (when retention_s is set)
- :mod:`.timeouts`  fails runs past their execution timeout
- :mod:`.scheduler` fires due schedules (one run per tick)
"""
from .claimer import Claimer
from .heartbeat import Heartbeat
from .listener import Listener
from .retention import Retention
from .scheduler import Scheduler
from .timeouts import Timeouts

__all__ = ["Claimer", "Heartbeat", "Listener", "Retention", "Scheduler", "Timeouts"]
