"""The queue-file ids one client stored in this process: what its ``flush()`` waits for.

Ids only grow, and one client's appends usually get consecutive ids, so they are kept as runs
``(low, high)``: one run for a client alone on its file, more when other clients or processes
append in between. The number of runs is bounded: settled runs are forgotten, and past the
bound the two oldest runs merge (then ``flush`` may also wait for the few messages of others
stored between them, which the worker delivers anyway, oldest first).
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, List, Optional, Tuple

__all__ = ["StoredIds"]

Run = Tuple[int, int]
_MAX_RUNS = 256


class StoredIds:
    """Runs of row ids; ``first_pending`` reads the file's lowest unsettled id when pruning."""

    def __init__(self, first_pending: Callable[[], Optional[int]]) -> None:
        self._runs: List[Run] = []
        self._lock = threading.Lock()
        self._first_pending = first_pending

    def add(self, row_id: int) -> None:
        with self._lock:
            runs = self._runs
            if runs and runs[-1][1] + 1 == row_id:
                runs[-1] = (runs[-1][0], row_id)
                return
            if runs and row_id < runs[-1][1]:
                # Threads of one client may report their ids out of order (each appends,
                # then adds): the runs stay sorted, so that merging keeps them valid.
                bisect.insort(runs, (row_id, row_id))
            else:
                runs.append((row_id, row_id))
            if len(runs) > _MAX_RUNS:
                self._prune()

    def _prune(self) -> None:
        first = self._first_pending()
        self._runs = _after(self._runs, first - 1) if first is not None else []
        while len(self._runs) > _MAX_RUNS // 2:
            (low, _), (_, high) = self._runs[0], self._runs[1]
            self._runs[0:2] = [(low, high)]

    def snapshot(self) -> Tuple[Run, ...]:
        """The runs stored so far: what a flush started now waits for."""
        with self._lock:
            return tuple(self._runs)

    def forget_through(self, last_id: int) -> None:
        """Everything up to ``last_id`` is known settled (a flush saw it through)."""
        with self._lock:
            self._runs = [
                (max(low, last_id + 1), high) for low, high in self._runs if high > last_id
            ]

    def clear(self) -> None:
        with self._lock:
            self._runs = []


def _after(runs: List[Run], last_id: int) -> List[Run]:
    """The parts of ``runs`` above ``last_id``."""
    return [(max(low, last_id + 1), high) for low, high in runs if high > last_id]
