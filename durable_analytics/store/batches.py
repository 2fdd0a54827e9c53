"""Reading a batch: the oldest ready messages that fit a count and a byte budget.

A row the store cannot hand out (its text is not UTF-8 or not a JSON object, or a column is
not a number: written by another tool, or a byte flipped on disk) is reported apart, by id,
so that the lease moves it to the dead letters and the rest of the queue flows. Its content
never appears in a reason, a log line or an error.
"""

from __future__ import annotations

import bisect
import operator
import sqlite3
from itertools import accumulate, repeat
from itertools import count as count_up
from typing import Dict, List, NamedTuple, Optional, Tuple

from .ranges import free_spans
from .records import Row

# A batch in one row: the statement runs without handing the interpreter lock back and forth
# once per message (a row-by-row fetch of 500 rows lets the application's thread in 500
# times, and each switch costs both threads). Stored JSON never holds a raw control
# character, so char(30) separates the messages; a row that does is read row by row. The last
# column counts the rows that are not a JSON object ({not_json} below), read the careful way.
_BATCH = (
    "SELECT COUNT(*), group_concat(id), group_concat(size), group_concat(attempts), "
    "group_concat(created), group_concat(data, char(30)), SUM({not_json}) FROM (SELECT id, "
    "data, size, attempts, created FROM messages WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?)"
)
# Row by row, the text as bytes: nothing is decoded before it is checked.
_CAREFUL = (
    "SELECT id, CAST(data AS BLOB), size, attempts, created, {not_json} FROM messages "
    "WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?"
)
_NOT_JSON = "(NOT json_valid(data) OR substr(data, 1, 1) <> '{')"
_NOT_JSON_UNCHECKED = "0"  # an SQLite built without JSON functions: the server is the check


class Batch(NamedTuple):
    """Rows to lease, and the rows (id, reason) that cannot be handed out."""

    rows: List[Row]
    bad: List[Tuple[int, str]]

    @property
    def span(self) -> Optional[Tuple[int, int]]:
        """The id range the batch was read from (good and bad rows), if any."""
        ids = [row.id for row in self.rows] + [row_id for row_id, _ in self.bad]
        return (min(ids), max(ids)) if ids else None


_EMPTY = Batch([], [])
_SQL: Dict[str, str] = {}


def _sql(conn: sqlite3.Connection) -> Tuple[str, str]:
    """The batch statements, with the JSON check where this SQLite has ``json_valid``."""
    if not _SQL:
        try:
            conn.execute("SELECT json_valid('{}')").fetchone()
            check = _NOT_JSON
        except sqlite3.OperationalError:
            check = _NOT_JSON_UNCHECKED
        _SQL["batch"] = _BATCH.replace("{not_json}", check)
        _SQL["careful"] = _CAREFUL.replace("{not_json}", check)
    return _SQL["batch"], _SQL["careful"]


def _fast(conn: sqlite3.Connection, low: int, high: int, limit: int) -> Optional[List[Row]]:
    """The rows, read as one aggregated row; ``None`` if any needs the careful read."""
    batch_sql, _ = _sql(conn)
    try:
        count, ids, sizes, attempts, created, data, bad = conn.execute(
            batch_sql, (low, high, limit)
        ).fetchone()
        if not count:
            return []
        texts = data.split("\x1e")
        if bad or len(texts) != count:
            return None
        return sorted(  # in id order, whatever order the aggregate saw the rows in
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
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc).lower():
            raise
        return None
    except (ValueError, TypeError):
        return None


def _careful(conn: sqlite3.Connection, low: int, high: int, limit: int) -> Batch:
    """Row by row, each checked: what can be handed out, and what cannot, by id."""
    _, careful_sql = _sql(conn)
    rows: List[Row] = []
    bad: List[Tuple[int, str]] = []
    for row_id, data, size, attempts, created, not_json in conn.execute(
        careful_sql, (low, high, limit)
    ):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            bad.append((row_id, f"row {row_id}: its text is not valid UTF-8"))
            continue
        if not_json:
            bad.append((row_id, f"row {row_id}: its text is not a JSON object"))
            continue
        try:
            rows.append(Row(row_id, text, int(size), int(attempts), float(created)))
        except (TypeError, ValueError):
            bad.append((row_id, f"row {row_id}: its size, attempts or time is not a number"))
    return Batch(rows, bad)


def read_batch(conn: sqlite3.Connection, low: int, high: int, limit: int, max_bytes: int) -> Batch:
    """The oldest messages with ids in ``low..high``: at most ``limit``, and as many as fit
    ``max_bytes`` counting one separator byte each. A first message larger than the budget
    is taken alone: it is tried (and rejected by the server) rather than left to block the
    queue. Built with C-level calls only: this runs once per batch of up to 500 messages."""
    rows = _fast(conn, low, high, limit)
    batch = Batch(rows, []) if rows is not None else _careful(conn, low, high, limit)
    if not batch.rows:
        return batch
    totals = list(
        map(operator.add, accumulate(map(operator.itemgetter(2), batch.rows)), count_up(1))
    )
    kept = batch.rows[: max(1, bisect.bisect_right(totals, max_bytes))]
    if len(kept) == len(batch.rows):
        return batch
    return Batch(kept, [(i, why) for i, why in batch.bad if i < kept[-1].id])


def ready_batch(conn: sqlite3.Connection, limit: int, max_bytes: int) -> Batch:
    """The oldest ready messages (see ``read_batch``): the first free span that has any."""
    for low, high in free_spans(conn):
        batch = read_batch(conn, low, high, limit, max_bytes)
        if batch.rows or batch.bad:
            return batch
    return _EMPTY
