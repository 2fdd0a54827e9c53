"""Disk use: a drained file gives its space back, in short steps; the WAL stays bounded while
nothing is delivered; a file from before incremental vacuum is converted once, when cheap."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from durable_analytics.retry import RetryPolicy
from durable_analytics.store import MessageStore
from durable_analytics.store.maintenance import FREE_RESERVE_PAGES, VACUUM_STEP_PAGES
from durable_analytics.testing import Collector
from durable_analytics.transport import Transport
from durable_analytics.worker import Worker

PAD = "x" * 1000


def events(count: int, start: int = 0) -> List[Tuple[str, int]]:
    out = []
    for n in range(start, start + count):
        data = json.dumps({"type": "track", "event": "Disk", "messageId": f"m{n}", "pad": PAD})
        out.append((data, len(data)))
    return out


def fill(store: MessageStore, count: int) -> None:
    for start in range(0, count, 500):
        store.append_many(events(min(500, count - start), start))


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def worker(queue_file: Path, collector: Collector) -> Iterator[Worker]:
    store = MessageStore.open(queue_file)
    transport = Transport("disk-key", collector.url)
    yield Worker(store, transport, policy=RetryPolicy(initial=0.01, maximum=0.05))
    transport.close()
    store.close()


def make_old_file(path: Path) -> None:
    """A queue file as versions before incremental vacuum made it (auto_vacuum off)."""
    MessageStore.open(path).close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA auto_vacuum=NONE")
    conn.execute("VACUUM")
    conn.close()
    assert pragma(path, "auto_vacuum") == 0


def test_a_new_file_gives_free_pages_back_in_steps(queue_file: Path) -> None:
    store = MessageStore.open(queue_file)
    try:
        assert pragma(queue_file, "auto_vacuum") == 2  # INCREMENTAL
        fill(store, 3_000)
        store.ack(range(1, 3_001))
        free = pragma(queue_file, "freelist_count")
        assert free > 1_000
        assert store.give_back(steps=1) == VACUUM_STEP_PAGES  # one short transaction
        assert store.give_back() == free - VACUUM_STEP_PAGES - FREE_RESERVE_PAGES
    finally:
        store.close()


@pytest.mark.parametrize("old", [False, True], ids=["new-file", "file-from-before"])
def test_a_drained_file_gives_its_space_back(
    queue_file: Path, worker: Worker, collector: Collector, old: bool
) -> None:
    if old:
        worker.store.close()
        make_old_file(queue_file)
    fill(worker.store, 5_000)
    worker.store.checkpoint()
    full = on_disk(queue_file)
    assert full > 5_000 * 1_000
    assert worker.deliver_until(worker.store.last_id(), timeout=30)
    for _ in range(3):  # idle cycles, as the worker's thread makes them
        worker.cycle()
    assert len(collector.message_ids) == 5_000
    assert pragma(queue_file, "auto_vacuum") == 2
    # What is left: the schema and the free pages kept for the next appends to reuse.
    assert on_disk(queue_file) <= (FREE_RESERVE_PAGES + 64) * 4096, (full, on_disk(queue_file))


def test_a_file_from_before_holding_much_data_is_not_rebuilt_while_it_does(
    queue_file: Path,
) -> None:
    """The one-time VACUUM holds the write lock while it copies the live data: it waits
    until the file holds little (after a drain)."""
    make_old_file(queue_file)
    store = MessageStore.open(queue_file)
    try:
        fill(store, 6_000)  # over 4 MB of data
        store.maintain(idle=True)
        assert pragma(queue_file, "auto_vacuum") == 0
        store.ack(range(1, 6_001))
        store.maintain(idle=True)
        assert pragma(queue_file, "auto_vacuum") == 2
    finally:
        store.close()


def test_the_wal_stays_bounded_while_nothing_is_delivered(queue_file: Path, worker: Worker) -> None:
    """The server is down (a shared backoff far away): the callers go on appending, and the
    worker's backoff cycles keep the WAL near its checkpoint threshold (16 MB)."""
    store = worker.store
    owner = store.new_owner()
    store.append_many(events(1))
    lease = store.lease(owner, max_messages=1, max_bytes=10**6, lease_seconds=60)
    store.release(owner, lease.ids, error="HTTP 503", retry_at=worker.clock() + 3_600)
    largest = 0
    for start in range(0, 8_000, 100):
        for data, size in events(100, start):
            store.append(data, size)  # one transaction per call, as track() does
        assert worker.cycle()[1] == "backoff"
        largest = max(largest, Path(f"{queue_file}-wal").stat().st_size)
    assert largest <= 16 * 1024 * 1024 + 100 * 10_000, largest
