"""Message ids as ranges: a batch is a run of consecutive ids, a lease names one range."""

from __future__ import annotations

import sqlite3
from typing import Iterable, List, Sequence, Tuple

MAX_ID = (1 << 63) - 1  # SQLite's largest rowid


def marks(ids: Sequence[int]) -> str:
    """``?,?,...``: one SQL parameter per id."""
    return ",".join("?" * len(ids))


def runs(ids: Iterable[int]) -> List[Tuple[int, int]]:
    """Sorted, distinct ``ids`` as ranges of consecutive integers: a batch is usually one."""
    found: List[Tuple[int, int]] = []
    for row_id in sorted(set(ids)):
        if found and found[-1][1] + 1 == row_id:
            found[-1] = (found[-1][0], row_id)
        else:
            found.append((row_id, row_id))
    return found


def free_spans(conn: sqlite3.Connection) -> List[Tuple[int, int]]:
    """The id ranges no lease covers, in order: where the ready messages are."""
    spans = []
    start = 0
    for low, high in conn.execute("SELECT lo, hi FROM leases ORDER BY lo"):
        if low > start:
            spans.append((start, low - 1))
        start = max(start, high + 1)
    spans.append((start, MAX_ID))
    return spans
