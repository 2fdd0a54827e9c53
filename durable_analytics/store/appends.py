"""Appending messages, and the bounds on what the file holds (``max_queue_bytes``,
``max_queue_messages``) with the overflow policy that applies when a bound is reached."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import List, Optional, Sequence, Tuple

from ..errors import QueueFull
from ..limits import DEFAULT_MAX_MESSAGE_BYTES
from .connection import Connection
from .ranges import MAX_ID, free_spans, runs
from .schema import HIGH_WATER, INSERT

log = logging.getLogger("durable_analytics")

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "raise")
_DROP_WARNING_INTERVAL = 1.0
# Bytes in use: pages holding data. Read from the file header; constant time.
_PAGES_USED = "SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()"


class Appends(Connection):
    """``append`` / ``append_many``: commit messages, applying the bounds and overflow policy."""

    max_queue_bytes: Optional[int]
    max_queue_messages: Optional[int]
    overflow: str

    def _start_appends(self) -> None:
        self._unchecked = 0  # appends left before the limits are read again
        self._dropped_unreported = 0
        self._last_drop_warning = 0.0

    def append(
        self, data: str, size: Optional[int] = None, *, now: Optional[float] = None
    ) -> Optional[int]:
        """Commit one message's JSON; return its row id, or ``None`` if dropped as newest."""
        if size is None:
            size = len(data.encode("utf-8"))
        created = time.time() if now is None else now
        with self.tran_lock:
            conn = self._db()
            try:
                if self._unchecked > 0:
                    self._unchecked -= 1
                    return conn.execute(INSERT, (data, size, created)).lastrowid
                count, used = self._usage(conn, 1, size)
                if not self._over_limit(count, used):
                    self._unchecked = self._safe_appends(count, used)
                    return conn.execute(INSERT, (data, size, created)).lastrowid
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        ids = self.append_many([(data, size)], now=created)
        return ids[0] if ids else None

    def append_many(
        self, items: Sequence[Tuple[str, int]], *, now: Optional[float] = None
    ) -> List[int]:
        """Commit many ``(json, size)`` messages in one transaction, applying the overflow
        policy; return the ids of those stored, in order (``drop_newest`` may store fewer)."""
        created = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> Tuple[List[int], int]:
            incoming = list(items)
            dropped = self._make_room(conn, incoming)
            if dropped:
                conn.execute("UPDATE state SET dropped = dropped + ? WHERE id = 0", (dropped,))
            ids = [conn.execute(INSERT, (data, size, created)).lastrowid for data, size in incoming]
            return ids, dropped

        ids, dropped = self._write(work)
        if dropped:
            self._warn_dropped(dropped)
        return ids

    def _make_room(self, conn: sqlite3.Connection, incoming: List[Tuple[str, int]]) -> int:
        """Apply the overflow policy so that ``incoming`` fits (``drop_newest`` shortens it);
        return how many messages were dropped."""
        need_count, need_bytes = self._usage(conn, len(incoming), sum(s for _, s in incoming))
        if not self._over_limit(need_count, need_bytes):
            return 0
        if self.overflow == "raise":
            raise QueueFull(
                f"{self.file} is full (limits: {self.max_queue_messages or '-'} "
                f"messages, {self.max_queue_bytes or '-'} bytes): the message was not "
                "stored. Run `durable-analytics drain`, raise max_queue_bytes, or "
                "choose overflow='drop_oldest'"
            )
        if self.overflow == "drop_oldest":
            return self._drop_oldest(conn, incoming)
        dropped = 0
        while incoming and self._over_limit(need_count, need_bytes):
            _, size = incoming.pop()
            need_count -= 1
            need_bytes -= size
            dropped += 1
        return dropped

    def _usage(self, conn: sqlite3.Connection, more: int, more_bytes: int) -> Tuple[int, int]:
        """(messages, bytes) the file would hold with ``more`` messages of ``more_bytes`` added.

        Bytes are the file's pages in use (per-row overhead included), read in constant time.
        Messages are counted only under a message limit: first as the id span (an upper
        bound, one lookup), exactly only when that bound is over the limit.
        """
        used = more_bytes
        if self.max_queue_bytes is not None:
            used += conn.execute(_PAGES_USED).fetchone()[0] * self._page_size
        if self.max_queue_messages is None:
            return more, used
        span, dead = conn.execute(
            "SELECT (SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM messages), "
            "(SELECT COUNT(*) FROM dead_letters)"
        ).fetchone()
        if span + dead + more > self.max_queue_messages:
            span = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        return span + dead + more, used

    def _safe_appends(self, count: int, used: int) -> int:
        """How many appends may skip the limit check: a quarter of the headroom, at most 100,
        so that the limits hold (to within a few messages) even with other processes appending,
        while a queue far from full pays for no check at all on most calls."""
        room = 100
        if self.max_queue_messages is not None:
            room = min(room, (self.max_queue_messages - count) // 4)
        if self.max_queue_bytes is not None:
            room = min(room, (self.max_queue_bytes - used) // (4 * DEFAULT_MAX_MESSAGE_BYTES))
        return max(0, room)

    def _over_limit(self, count: int, total: int) -> bool:
        return (self.max_queue_messages is not None and count > self.max_queue_messages) or (
            self.max_queue_bytes is not None and total > self.max_queue_bytes
        )

    def _drop_oldest(self, conn: sqlite3.Connection, incoming: Sequence[Tuple[str, int]]) -> int:
        """Delete the oldest rows nobody holds a lease on until ``incoming`` fits.

        Waiting messages go first, oldest first; dead letters only when nothing else is left.
        """
        more, more_bytes = len(incoming), sum(size for _, size in incoming)
        dropped = 0
        for table in ("messages", "dead_letters"):
            while True:
                count, used = self._usage(conn, more, more_bytes)
                over_count = count - (self.max_queue_messages or count)
                over_bytes = used - (self.max_queue_bytes or used)
                if over_count <= 0 and over_bytes <= 0:
                    return dropped
                victims = self._victims(conn, table, over_count, over_bytes)
                if not victims:
                    break
                conn.execute(HIGH_WATER)
                for low, high in runs(victims):
                    conn.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", (low, high))
                dropped += len(victims)
        return dropped

    @staticmethod
    def _victims(
        conn: sqlite3.Connection, table: str, over_count: int, over_bytes: int
    ) -> List[int]:
        """The oldest unleased rows of ``table`` (up to 1,000) that free what is over."""
        spans = free_spans(conn) if table == "messages" else [(0, MAX_ID)]
        victims: List[int] = []
        freed = 0
        for low, high in spans:
            for row_id, size in conn.execute(
                f"SELECT id, size FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1000",
                (low, high),
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
