"""What the collector accepted lately and how much it received in all, for the debugger page
and for long runs of ``durable-analytics collect``: a ring buffer of the last N accepted
messages behind a cursor (memory stays bounded), and counts that stay exact however many
messages the buffer has forgotten."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")

DEFAULT_FEED_SIZE = 1000


@dataclass
class Counts:
    """Totals since the collector was made (or last reset)."""

    requests: int = 0
    """Requests that reached the collector's API (the debugger page's own are not counted)."""
    events: int = 0
    """Accepted messages, redeliveries included."""
    distinct: int = 0
    """Distinct accepted messageIds: what a deduplicating server would count."""
    duplicates: int = 0
    """Accepted messages whose messageId had already been accepted."""
    rejected: int = 0
    """Requests answered with a 4xx or 5xx status, injected faults included."""
    dropped: int = 0
    """Connections closed without an answer (an injected reset, or a stop while answering)."""


class Recent(Generic[T]):
    """Items in arrival order, forgetting the oldest once their weights (messages) pass
    ``budget``; None keeps everything. Weighing requests and batches by the messages they
    carry bounds memory by messages kept, whatever the batch sizes."""

    def __init__(self, budget: Optional[int]) -> None:
        self._items: deque[tuple[T, int]] = deque()
        self._budget = budget
        self._weight = 0

    def append(self, item: T, weight: int = 1) -> None:
        self._items.append((item, weight))
        self._weight += weight
        while self._budget is not None and self._weight > self._budget and len(self._items) > 1:
            self._weight -= self._items.popleft()[1]

    def clear(self) -> None:
        self._items.clear()
        self._weight = 0

    def __iter__(self) -> Iterator[T]:
        return (item for item, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    """Position in arrival order, from 1; the page's cursor."""
    received: float
    """``time.time()`` when the collector accepted it."""
    duplicate: bool
    """Its messageId had already been accepted."""
    message: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "received": self.received,
            "duplicate": self.duplicate,
            "message": self.message,
        }


class Feed:
    """The last ``size`` accepted messages in arrival order. Not locked: the collector
    guards it. Sequence numbers keep growing across :meth:`clear`, so that a cursor held by a
    page never skips what arrives after a reset."""

    def __init__(self, size: int = DEFAULT_FEED_SIZE) -> None:
        if size < 1:
            raise ValueError(f"the feed must hold at least one message, not {size}")
        self.size = size
        self.generation = 0
        self._entries: deque[FeedEntry] = deque(maxlen=size)
        self._last = 0

    @property
    def last(self) -> int:
        """The newest sequence number handed out (0 before the first message)."""
        return self._last

    def add(self, message: dict[str, Any], *, duplicate: bool, received: float) -> None:
        self._last += 1
        self._entries.append(FeedEntry(self._last, received, duplicate, message))

    def after(self, cursor: int, limit: int) -> tuple[list[FeedEntry], int]:
        """The newest ``limit`` entries after ``cursor``, oldest first, and how many entries
        after the cursor are not among them (forgotten by the buffer or past the limit). A
        cursor from the future (a page left open across a restart) starts over."""
        if cursor > self._last or cursor < 0:
            cursor = 0
        newer = max(0, min(self._last - cursor, len(self._entries)))
        taken = min(newer, max(0, limit))
        start = len(self._entries) - taken
        entries = list(itertools.islice(self._entries, start, None))
        return entries, self._last - cursor - taken

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1
