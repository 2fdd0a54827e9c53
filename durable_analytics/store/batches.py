"""Reading a batch: the oldest ready messages that fit a count and a byte budget."""

from __future__ import annotations

import bisect
import operator
import sqlite3
from itertools import accumulate, repeat
from itertools import count as count_up
from typing import List

from .ranges import free_spans
from .records import Row

# A batch in one row: the statement runs without handing the interpreter lock back and forth
# once per message (a row-by-row fetch of 500 rows lets the application's thread in 500
# times, and each switch costs both threads). Stored JSON never holds a raw control
# character, so char(30) separates the messages; a row that does is read row by row.
_BATCH = (
    "SELECT COUNT(*), group_concat(id), group_concat(size), group_concat(attempts), "
    "group_concat(created), group_concat(data, char(30)) FROM (SELECT id, data, size, "
    "attempts, created FROM messages WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?)"
)
_BATCH_ROWS = (
    "SELECT id, data, size, attempts, created FROM messages "
    "WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?"
)


def read_batch(
    conn: sqlite3.Connection, low: int, high: int, limit: int, max_bytes: int
) -> List[Row]:
    """The oldest messages with ids in ``low..high``: at most ``limit``, and as many as fit
    ``max_bytes`` counting one separator byte each. A first message larger than the budget
    is taken alone: it is tried (and rejected by the server) rather than left to block the
    queue. Built with C-level calls only: this runs once per batch of up to 500 messages."""
    count, ids, sizes, attempts, created, data = conn.execute(_BATCH, (low, high, limit)).fetchone()
    if not count:
        return []
    texts = data.split("\x1e")
    if len(texts) != count:
        rows = [Row(*row) for row in conn.execute(_BATCH_ROWS, (low, high, limit))]
    else:
        rows = sorted(  # in id order, whatever order the aggregate saw the rows in
            map(
                tuple.__new__,
                repeat(Row),
                zip(
                    map(int, ids.split(",")),
                    texts,
                    map(int, sizes.split(",")),
                    map(int, attempts.split(",")),
                    map(float, created.split(",")),
                ),
            )
        )
    totals = list(map(operator.add, accumulate(map(operator.itemgetter(2), rows)), count_up(1)))
    return rows[: max(1, bisect.bisect_right(totals, max_bytes))]


def ready_rows(conn: sqlite3.Connection, limit: int, max_bytes: int) -> List[Row]:
    """The oldest ready messages (see ``read_batch``): the first free span that has any."""
    for low, high in free_spans(conn):
        rows = read_batch(conn, low, high, limit, max_bytes)
        if rows:
            return rows
    return []
