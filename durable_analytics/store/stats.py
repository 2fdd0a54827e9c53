"""What the worker and monitoring read: counts, sizes, the shared backoff. Each read that
takes several statements runs in one read transaction, so its numbers agree with each other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .connection import Connection
from .destination import read as read_destination
from .ranges import free_spans
from .records import Backoff, Stats
from .schema import COVERED, WAITING

# The file's all-time counters: columns of ``state`` and fields of ``Stats`` by one name.
_COUNTERS = ("dropped", "filtered", "wal_lost", "delivered", "failed_uploads")


class Reads(Connection):
    """``stats`` and the smaller reads the worker, ``flush`` and ``drain`` make."""

    def backoff(self) -> Backoff:
        retry_at, failures, last_error, opened = self._read(
            "SELECT retry_at, failures, last_error, opened FROM state"
        )[0]
        return Backoff(retry_at, failures, last_error, opened)

    def ready_summary(self, limit: int) -> Tuple[int, Optional[float]]:
        """How many ready messages, counting no further than ``limit``, and the oldest's time."""
        count = 0
        oldest: Optional[float] = None
        with self._snapshot() as conn:
            for low, high in free_spans(conn):
                if oldest is None:
                    first = conn.execute(
                        "SELECT created FROM messages WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1",
                        (low, high),
                    ).fetchone()
                    oldest = first[0] if first else None
                count += conn.execute(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM messages "
                    "WHERE id BETWEEN ? AND ? LIMIT ?)",
                    (low, high, limit - count),
                ).fetchone()[0]
                if count >= limit:
                    break
        return count, oldest

    def next_lease_expiry(self) -> Optional[float]:
        """When the earliest lease held by anyone expires (a taker waits for it)."""
        return self._read("SELECT MIN(expires) FROM leases")[0][0]

    def pending_through(self, last_id: int) -> bool:
        """Whether any message with id <= ``last_id`` is still waiting or in flight."""
        rows = self._read(
            "SELECT 1 FROM messages WHERE id <= ? LIMIT 1",
            (last_id,),
        )
        return bool(rows)

    def pending_in(self, runs: Sequence[Tuple[int, int]]) -> bool:
        """Whether any message in these ``(low, high)`` id ranges is still waiting or in flight
        (what ``flush`` waits for: the ids one client stored)."""
        with self._snapshot() as conn:
            return any(
                conn.execute(
                    "SELECT 1 FROM messages WHERE id BETWEEN ? AND ? LIMIT 1", run
                ).fetchone()
                for run in runs
            )

    def first_pending_id(self) -> Optional[int]:
        """The lowest id still waiting or in flight: every id below it is settled."""
        return self._read("SELECT MIN(id) FROM messages")[0][0]

    def last_id(self) -> int:
        return self._read("SELECT COALESCE(MAX(id), 0) FROM messages")[0][0]

    def pending_count(self, last_id: int) -> int:
        """How many messages with id <= ``last_id`` are still waiting or in flight."""
        return self._read(
            "SELECT COUNT(*) FROM messages WHERE id <= ?",
            (last_id,),
        )[0][0]

    def ready_sizes(self, last_id: int) -> List[int]:
        """Sizes of the ready messages with id <= ``last_id``, oldest first (a dry-run drain)."""
        sizes: List[int] = []
        with self._snapshot() as conn:
            for low, high in free_spans(conn):
                sizes += [
                    row[0]
                    for row in conn.execute(
                        "SELECT size FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
                        (low, min(high, last_id)),
                    )
                ]
        return sizes

    def rows_with_status(self) -> List[Tuple[int, str, float, str]]:
        """Every message and dead letter as ``(id, json, created, status)``, status as
        persist-queue numbers it: "1" ready, "2" leased, "9" dead (its ``queue()``)."""
        with self._snapshot() as conn:
            leased = conn.execute("SELECT lo, hi FROM leases").fetchall()
            rows = conn.execute("SELECT id, data, created FROM messages ORDER BY id").fetchall()
            dead = conn.execute("SELECT id, data, created FROM dead_letters ORDER BY id").fetchall()
        held = [(low, high) for low, high in leased]
        found = [
            (row_id, data, created, "2" if any(lo <= row_id <= hi for lo, hi in held) else "1")
            for row_id, data, created in rows
        ]
        return found + [(row_id, data, created, "9") for row_id, data, created in dead]

    def stats(self) -> Stats:
        self._check_files(force=True)
        with self._snapshot() as conn:
            state = conn.execute(
                f"SELECT retry_at, last_error, failures, {', '.join(_COUNTERS)} FROM state"
            ).fetchone()
            queued, total = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages"
            ).fetchone()
            dead, dead_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead_letters"
            ).fetchone()
            leased = conn.execute(f"{COVERED} WHERE owner != ?", (WAITING,)).fetchone()[0]
            retrying = conn.execute(f"{COVERED} WHERE owner = ?", (WAITING,)).fetchone()[0]
            oldest = conn.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
            destination = read_destination(conn)
        retry_at, last_error, failures = state[:3]
        bounds = destination.bounds  # the file's, once a client claimed it
        file_bytes = sum(
            p.stat().st_size
            for p in (self.file, Path(f"{self.file}-wal"), Path(f"{self.file}-shm"))
            if p.exists()
        )
        return Stats(
            path=str(self.file),
            ready=queued - leased,
            leased=leased,
            dead=dead,
            queued_bytes=total + dead_bytes,
            file_bytes=file_bytes,
            oldest_age_seconds=None if oldest is None else max(0.0, time.time() - oldest[0]),
            last_error=last_error,
            retry_at=retry_at or None,
            retrying=retrying,
            failures_in_a_row=failures,
            breaker="open" if retry_at > time.time() else "closed",
            endpoint=destination.endpoint,
            max_queue_messages=self.max_queue_messages if bounds is None else bounds.messages,
            max_queue_bytes=self.max_queue_bytes if bounds is None else bounds.bytes,
            **dict(zip(_COUNTERS, state[3:])),
        )
