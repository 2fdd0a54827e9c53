"""The values the store hands out: rows, leases, dead letters, the backoff and statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple


class Row(NamedTuple):
    """One stored message, as leased (a tuple: a lease builds hundreds of them at once)."""

    id: int
    data: str
    size: int
    attempts: int
    created: float


@dataclass(frozen=True)
class DeadLetter:
    """A message the server rejected, with why."""

    id: int
    data: str
    http_status: Optional[int]
    reason: Optional[str]
    attempts: int
    created: float
    dead_at: float


@dataclass(frozen=True)
class Lease:
    """Rows one taker holds for one upload attempt."""

    owner: str
    rows: Tuple[Row, ...]
    expires: float

    @property
    def ids(self) -> List[int]:
        return [row.id for row in self.rows]

    @property
    def size(self) -> int:
        return sum(row.size for row in self.rows)


@dataclass(frozen=True)
class Backoff:
    """The shared retry state: no taker sends before ``retry_at`` (a ``time.time()``)."""

    retry_at: float
    failures: int
    last_error: Optional[str]
    opened: float = 0.0
    """When the breaker last opened (or its probe went out); 0 while it is closed."""


@dataclass(frozen=True)
class Stats:
    """Counts read from the file itself, identical for every process that asks."""

    path: str
    ready: int
    leased: int
    dead: int
    dropped: int
    delivered: int
    queued_bytes: int
    file_bytes: int
    oldest_age_seconds: Optional[float]
    last_error: Optional[str]
    retry_at: Optional[float]
    filtered: int = 0
    """Messages a ``before_send`` hook chose not to record, all time (not a loss)."""
    wal_lost: int = 0
    """Times a process found the -wal/-shm files taken away under it (messages may be lost)."""
    retrying: int = 0
    """Of ``ready``, the messages of failed batches waiting for their own retry time."""
    failures_in_a_row: int = 0
    """Uploads that failed in a row across the file (any success resets it)."""
    failed_uploads: int = 0
    """Upload attempts that failed across the file, all time (their messages were kept and
    retried; a rejection is a dead letter, not a failed upload)."""
    breaker: str = "closed"
    """``"open"`` while no process on the file sends (until ``retry_at``), else ``"closed"``."""
    # The file's destination and bounds (destination.py): the same for every client.
    endpoint: Optional[str] = None
    max_queue_messages: Optional[int] = None
    max_queue_bytes: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "ready": self.ready,
            "leased": self.leased,
            "dead": self.dead,
            "dropped": self.dropped,
            "filtered": self.filtered,
            "wal_lost": self.wal_lost,
            "delivered": self.delivered,
            "failed_uploads": self.failed_uploads,
            "queued_bytes": self.queued_bytes,
            "bytes": self.file_bytes,
            "oldest_age_seconds": self.oldest_age_seconds,
            "last_error": self.last_error,
            "retry_at": self.retry_at,
            "retrying": self.retrying,
            "failures_in_a_row": self.failures_in_a_row,
            "breaker": self.breaker,
            "endpoint": self.endpoint,
            "max_queue_messages": self.max_queue_messages,
            "max_queue_bytes": self.max_queue_bytes,
        }


@dataclass(frozen=True)
class BufferedStats(Stats):
    """A ``durability="buffered"`` client's stats: the file's counts, and this process's
    messages handed over and not committed yet, committed, and refused by a commit."""

    buffered_pending: int = 0
    buffered_committed: int = 0
    buffered_failed: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {
            **super().as_dict(),
            "buffered_pending": self.buffered_pending,
            "buffered_committed": self.buffered_committed,
            "buffered_failed": self.buffered_failed,
        }
