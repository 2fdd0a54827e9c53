"""Appending messages, and the bounds on what the file holds (``max_queue_bytes``,
``max_queue_messages``) with the overflow policy that applies when a bound is reached."""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from typing import List, Optional, Sequence, Tuple

from ..errors import QueueFull
from .connection import SQLITE_FULL, Connection
from .ranges import MAX_ID, free_spans, runs
from .schema import HIGH_WATER, INSERT, INSERT_ROWS, NEXT_ID

log = logging.getLogger("durable_analytics")

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "raise")
_DROP_WARNING_INTERVAL = 1.0
# Bytes in use: pages holding data. Read from the file header; constant time.
_PAGES_USED = "SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()"
# Messages and dead letters: an upper bound from the id spans (two lookups each), and exactly.
_SPANS = (
    "SELECT (SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM messages) + "
    "(SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM dead_letters)"
)
_COUNTS = "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM dead_letters)"
# The checks of the one-statement insert: (page size, bytes the rows may take, the bound) and
# (rows, the bound).
_ROOM_FOR_BYTES = f"({_PAGES_USED}) * ? + ? <= ?"
_ROOM_FOR_MESSAGES = f"({_SPANS}) + ? <= ?"


_ROWS_PER_STATEMENT = 500  # 2,000 parameters, well under SQLite's limit of 32,766


def _insert(
    conn: sqlite3.Connection, items: Sequence[Tuple[str, int]], created: float
) -> List[int]:
    """Insert ``items`` (inside a write transaction) and return their ids, in order.

    Several rows go in one statement: each statement is one step, and each step hands the
    interpreter lock to other threads and waits to get it back, which under many threads
    costs more than the insert itself."""
    if len(items) == 1:
        return [conn.execute(INSERT, (items[0][0], items[0][1], created)).lastrowid]
    first = conn.execute(NEXT_ID).fetchone()[0]
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        chunk = items[start : start + _ROWS_PER_STATEMENT]
        values: List[object] = []
        for row_id, (data, size) in enumerate(chunk, first + start):
            values += (row_id, data, size, created)
        conn.execute(INSERT_ROWS + ",".join(["(?,?,?,?)"] * len(chunk)), values)
    return list(range(first, first + len(items)))


@functools.lru_cache(maxsize=64)
def _statement(rows: int, checks: str) -> str:
    """Insert ``rows`` messages in one statement, with ids counted up from the next id, only
    if ``checks`` (SQL, may be empty) hold. Parameters: the creation time, then each row's
    JSON and size, then those of ``checks``."""
    values = ",".join(f"({k},?,?)" for k in range(rows))
    where = f" WHERE {checks}" if checks else ""
    return (
        f"INSERT INTO messages (id, data, size, created) SELECT first.id + v.column1, "
        f"v.column2, v.column3, ? FROM ({NEXT_ID} AS id) AS first, (VALUES {values}) AS v"
        f"{where} ORDER BY v.column1"
    )


def _is_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: the page cap was reached (or the disk is full: the exact path tells)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == SQLITE_FULL if code is not None else "full" in str(exc)


class Appends(Connection):
    """``append`` / ``append_many``: commit messages, applying the bounds and overflow policy.

    The bounds are checked after the insert, inside the same ``BEGIN IMMEDIATE`` transaction,
    against what the file then holds: exact, whatever the message sizes and however many
    processes append at once (every writer of the file takes that lock in turn).
    """

    max_queue_bytes: Optional[int]
    max_queue_messages: Optional[int]
    overflow: str

    def _start_appends(self) -> None:
        self._dropped_unreported = 0
        self._last_drop_warning = 0.0

    def append(
        self, data: str, size: Optional[int] = None, *, now: Optional[float] = None
    ) -> Optional[int]:
        """Commit one message's JSON; return its row id, or ``None`` if dropped as newest."""
        if size is None:
            size = len(data.encode("utf-8"))
        created = time.time() if now is None else now
        ids = self._append_with_room(((data, size),), created)
        if ids is None:
            ids = self.append_many([(data, size)], now=created)
        return ids[0] if ids else None

    def _append_with_room(
        self, items: Sequence[Tuple[str, int]], created: float
    ) -> Optional[List[int]]:
        """The common case in one statement, its own transaction (one step of SQLite, so one
        wait for the interpreter lock instead of four). Under the page cap (see
        ``_apply_cap``) it is a plain insert; otherwise it inserts only if the file stays
        within its bounds whatever pages the rows take. None: no room to spare (or the cap
        was reached), the exact path decides."""
        with self.tran_lock:
            self._check_files()
            conn = self._db()
            if self._cap_bound != self.max_queue_bytes:
                self._restore_cap(conn)
            sql, params = self._insert_sql(items, created)
            try:
                cursor = conn.execute(sql, params)
            except sqlite3.Error as exc:
                if self._capped and _is_full(exc):
                    return None
                raise self._translate(exc) from exc
            if cursor.rowcount != len(items):
                return None
            last = int(cursor.lastrowid)
            first = last - len(items) + 1
            if first <= self._seen_id:  # ids only grow: the file went back in time
                try:
                    self._record_loss(f"a new message got id {first}")
                except sqlite3.Error as exc:
                    raise self._translate(exc) from exc
            self._seen_id = max(self._seen_id, last)
        return list(range(first, last + 1))

    def _insert_sql(
        self, items: Sequence[Tuple[str, int]], created: float
    ) -> Tuple[str, List[object]]:
        """The one-statement insert of ``items`` with the checks the bounds need."""
        checks: List[str] = []
        check_params: List[object] = []
        if self.max_queue_bytes is not None and not self._capped:
            checks.append(_ROOM_FOR_BYTES)
            # A row's pages: its overflow pages, plus a split leaf and interior page at most.
            need = sum(2 * size + 3 * self._page_size for _, size in items)
            check_params += (self._page_size, need, self.max_queue_bytes)
        if self.max_queue_messages is not None:
            checks.append(_ROOM_FOR_MESSAGES)
            check_params += (len(items), self.max_queue_messages)
        if len(items) == 1 and not checks:
            return INSERT, [items[0][0], items[0][1], created]
        sql = _statement(len(items), " AND ".join(checks))
        params: List[object] = [created]
        for data, size in items:
            params += (data, size)
        return sql, params + check_params

    def count_filtered(self, count: int = 1) -> None:
        """Record that ``count`` messages were filtered out before being stored."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE state SET filtered = filtered + ? WHERE id = 0", (count,))

        self._write(work)

    def append_many(
        self, items: Sequence[Tuple[str, int]], *, now: Optional[float] = None
    ) -> List[int]:
        """Commit many ``(json, utf8_size)`` messages in one transaction under the bounds.

        Returns the ids of those stored, in order: all of them, except that ``drop_newest``
        stores fewer when the queue is full; ``raise`` raises ``QueueFull`` and stores none;
        ``drop_oldest`` stores all and deletes the oldest unleased messages to make room.
        """
        created = time.time() if now is None else now
        if 1 < len(items) <= _ROWS_PER_STATEMENT:
            fast = self._append_with_room(items, created)
            if fast is not None:
                return fast

        def work(conn: sqlite3.Connection) -> Tuple[List[int], int]:
            ids = _insert(conn, items, created)
            if ids and ids[0] <= self._seen_id:  # ids only grow: the file went back in time
                self._record_loss(f"a new message got id {ids[0]}")
            dropped = self._make_room(conn, ids) if ids else 0
            if dropped:
                conn.execute("UPDATE state SET dropped = dropped + ? WHERE id = 0", (dropped,))
            return ids, dropped

        ids, dropped = self._write(work)
        if ids:
            self._seen_id = max(self._seen_id, ids[-1])
        if dropped:
            self._warn_dropped(dropped)
        return ids

    def replace(self, row_id: int, data: str) -> bool:
        """Rewrite a queued message's JSON (persist-queue's ``update``), under the bounds.
        Returns whether the message was still queued."""

        def work(conn: sqlite3.Connection) -> bool:
            size = len(data.encode("utf-8"))
            changed = conn.execute(
                "UPDATE messages SET data = ?, size = ? WHERE id = ?", (data, size, row_id)
            ).rowcount
            if changed and self._over_limit(*self._usage(conn, 0, 0)):
                raise QueueFull(f"{self.file} is full: the new value does not fit")
            return bool(changed)

        return bool(self._write(work))

    def full(self) -> bool:
        """Whether one more small message would pass a bound."""
        with self.tran_lock:
            try:
                return self._over_limit(*self._usage(self._db(), 1, 1))
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _make_room(self, conn: sqlite3.Connection, ids: List[int]) -> int:
        """With ``ids`` just inserted: apply the overflow policy if a bound is now exceeded
        (``drop_newest`` shortens ``ids``); return how many messages were dropped."""
        if self.max_queue_bytes is None and self.max_queue_messages is None:
            return 0
        if not self._over_limit(*self._usage(conn, 0, 0)):
            return 0
        if self.overflow == "raise":
            raise QueueFull(
                f"{self.file} is full (limits: {self.max_queue_messages or '-'} "
                f"messages, {self.max_queue_bytes or '-'} bytes): the message was not "
                "stored. Run `durable-analytics drain`, raise max_queue_bytes, or "
                "choose overflow='drop_oldest'"
            )
        if self.overflow == "drop_oldest":
            return self._drop_oldest(conn, ids)
        dropped = 0
        while ids and self._over_limit(*self._usage(conn, 0, 0)):
            conn.execute("DELETE FROM messages WHERE id = ?", (ids.pop(),))
            dropped += 1
        return dropped

    def _usage(self, conn: sqlite3.Connection, more: int, more_bytes: int) -> Tuple[int, int]:
        """(messages, bytes) the file would hold with ``more`` messages of ``more_bytes`` added.

        Bytes are the file's pages in use (per-row overhead included), read in constant time.
        Messages (queued and dead letters) are counted only under a message limit: first as
        the id spans (an upper bound, two lookups), exactly only when that bound is over.
        """
        used = more_bytes
        if self.max_queue_bytes is not None:
            used += conn.execute(_PAGES_USED).fetchone()[0] * self._page_size
        if self.max_queue_messages is None:
            return more, used
        count = conn.execute(_SPANS).fetchone()[0]
        if count + more > self.max_queue_messages:
            count = conn.execute(_COUNTS).fetchone()[0]
        return count + more, used

    def _over_limit(self, count: int, total: int) -> bool:
        return (self.max_queue_messages is not None and count > self.max_queue_messages) or (
            self.max_queue_bytes is not None and total > self.max_queue_bytes
        )

    def _drop_oldest(self, conn: sqlite3.Connection, ids: List[int]) -> int:
        """Delete the oldest rows nobody holds a lease on until the file is within bounds.

        Messages queued before ``ids`` go first, oldest first; then dead letters; then, if the
        bounds are still exceeded (what is left is leased), the new messages themselves.
        """
        dropped = 0
        for table, below in (("messages", ids[0]), ("dead_letters", MAX_ID), ("messages", MAX_ID)):
            while True:
                count, used = self._usage(conn, 0, 0)
                over_count = count - (self.max_queue_messages or count)
                over_bytes = used - (self.max_queue_bytes or used)
                if over_count <= 0 and over_bytes <= 0:
                    return dropped
                victims = self._victims(conn, table, below, over_count, over_bytes)
                if not victims:
                    break
                conn.execute(HIGH_WATER)
                for low, high in runs(victims):
                    conn.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", (low, high))
                dropped += len(victims)
                if below == MAX_ID and table == "messages":
                    gone = set(victims)
                    ids[:] = [row_id for row_id in ids if row_id not in gone]
        return dropped

    @staticmethod
    def _victims(
        conn: sqlite3.Connection, table: str, below: int, over_count: int, over_bytes: int
    ) -> List[int]:
        """The oldest unleased rows of ``table`` with ids below ``below`` (up to 1,000) that
        free what is over (at least one)."""
        spans = free_spans(conn) if table == "messages" else [(0, MAX_ID)]
        victims: List[int] = []
        freed = 0
        for low, high in spans:
            for row_id, size in conn.execute(
                f"SELECT id, size FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1000",
                (low, min(high, below - 1)),
            ):
                victims.append(row_id)
                freed += size
                if len(victims) >= over_count and freed >= over_bytes:
                    break
            if victims:
                break
        return victims

    def _warn_dropped(self, dropped: int) -> None:
        self._dropped_unreported += dropped
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARNING_INTERVAL:
            log.warning(
                "queue %s is full (overflow=%s): dropped %d message(s); see `durable-analytics "
                "stats` for the total",
                self.file,
                self.overflow,
                self._dropped_unreported,
            )
            self._dropped_unreported = 0
            self._last_drop_warning = now
