"""Dead letters: messages the server rejected (or that were retried for too long), kept
with their status and reason in a table of their own until requeued or purged. Keeping them
apart leaves the queue table in rowid order with no index to maintain on append."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, List, Optional, Sequence, Tuple

from .connection import Connection
from .ranges import marks, runs
from .records import DeadLetter
from .schema import HIGH_WATER, INSERT_BYTES


def move_dead(
    conn: sqlite3.Connection,
    ids: Sequence[int],
    http_status: Optional[int],
    reason: str,
) -> int:
    """Move these queued rows to the dead letters, with the status and reason."""
    moved = 0
    now = time.time()
    conn.execute(HIGH_WATER)
    for low, high in runs(ids):
        moved += conn.execute(
            "INSERT INTO dead_letters (data, size, created, attempts, http_status, "
            "reason, dead_at) SELECT data, size, created, attempts, ?, ?, ? "
            "FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
            (http_status, reason, now, low, high),
        ).rowcount
        conn.execute("DELETE FROM messages WHERE id BETWEEN ? AND ?", (low, high))
    return moved


def _dead_filter(
    ids: Optional[Sequence[int]], older_than: Optional[float]
) -> Tuple[str, List[Any]]:
    sql = "1"
    params: List[Any] = []
    if ids is not None:
        sql += f" AND id IN ({marks(ids)})" if ids else " AND 0"
        params += list(ids)
    if older_than is not None:
        sql += " AND dead_at <= ?"
        params.append(time.time() - older_than)
    return sql, params


class DeadLetters(Connection):
    """Listing, requeueing and purging dead letters."""

    def dead_reason(self, row_id: int) -> Optional[Tuple[Optional[int], Optional[str]]]:
        """``(http_status, reason)`` if the message ``row_id`` is a dead letter, else None."""
        rows = self._read("SELECT http_status, reason FROM dead_letters WHERE id = ?", (row_id,))
        return rows[0] if rows else None

    def dead_letters(self, limit: int = 100, offset: int = 0) -> List[DeadLetter]:
        """Rejected messages, oldest first."""
        rows = self._read(
            "SELECT id, CAST(data AS BLOB), http_status, reason, attempts, created, dead_at "
            "FROM dead_letters ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        # A row that was dead-lettered because its text is not UTF-8 is shown as far as it
        # can be read, so that an operator can see what it was.
        return [
            DeadLetter(row_id, bytes(data).decode("utf-8", "replace"), *rest)
            for row_id, data, *rest in rows
        ]

    def requeue_dead(
        self, ids: Optional[Sequence[int]] = None, older_than: Optional[float] = None
    ) -> int:
        """Make dead letters ready again (all, some ids, or those dead for ``older_than`` s).

        They join the end of the queue, in the order they died.
        """
        where, params = _dead_filter(ids, older_than)

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                f"SELECT CAST(data AS BLOB), size, created FROM dead_letters WHERE {where} "
                "ORDER BY id",
                params,
            ).fetchall()
            for row in rows:
                conn.execute(INSERT_BYTES, row)
            conn.execute(f"DELETE FROM dead_letters WHERE {where}", params)
            return len(rows)

        return self._write(work)

    def purge_dead(
        self, ids: Optional[Sequence[int]] = None, older_than: Optional[float] = None
    ) -> int:
        """Delete dead letters for good."""
        where, params = _dead_filter(ids, older_than)
        return self._write(
            lambda conn: conn.execute(f"DELETE FROM dead_letters WHERE {where}", params).rowcount
        )
