"""Parked runs: suspended runs whose coroutines stay in this process's memory, so a wake
resumes them without a replay. Bounded twice, least recently parked first out: by count
(``max_parked``) and by the memory they are estimated to hold (``max_parked_bytes``). A run
pushed out is evicted: its next claim replays it from its journal, wherever it lands.

A run's memory is estimated from what its execution holds: a fixed cost for the coroutine
and its objects, plus each journal event it keeps or produced (its payload's JSON size and
a fixed cost per event)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

# measured with tracemalloc (tests/integration/test_parked_memory.py), 200 parked runs: a
# one-step run holds 10.1 KB; each further event about 110 B beyond its payload's JSON text
# (20 small steps: 12.1 KB; 8 x 2 KB: 26.7 KB; 4 x 20 KB: 90.5 KB)
RUN_BYTES = 10 * 1024
EVENT_BYTES = 128


class Sized(Protocol):
    @property
    def memory_bytes(self) -> int: ...


R = TypeVar("R", bound=Sized)


class ParkedRuns(Generic[R]):
    """An LRU of parked runs by id, bounded by count and by estimated bytes."""

    def __init__(self, max_runs: int, max_bytes: int) -> None:
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self._runs: OrderedDict[uuid.UUID, tuple[R, int]] = OrderedDict()
        self.bytes = 0

    def add(self, run_id: uuid.UUID, run: R) -> list[R]:
        """Park ``run``; returns the runs pushed out to stay within both bounds (the oldest
        first; ``run`` itself when it alone is over the byte bound)."""
        self.pop(run_id)
        size = run.memory_bytes
        self._runs[run_id] = (run, size)
        self.bytes += size
        out: list[R] = []
        while self._runs and (len(self._runs) > self.max_runs or self.bytes > self.max_bytes):
            _, (old, old_size) = self._runs.popitem(last=False)
            self.bytes -= old_size
            out.append(old)
        return out

    def pop(self, run_id: uuid.UUID) -> R | None:
        got = self._runs.pop(run_id, None)
        if got is None:
            return None
        self.bytes -= got[1]
        return got[0]

    def get(self, run_id: uuid.UUID) -> R | None:
        got = self._runs.get(run_id)
        return None if got is None else got[0]

    def clear(self) -> list[R]:
        runs = [r for r, _ in self._runs.values()]
        self._runs.clear()
        self.bytes = 0
        return runs

    def values(self) -> list[R]:
        return [r for r, _ in self._runs.values()]

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[uuid.UUID]:
        return iter(list(self._runs))
