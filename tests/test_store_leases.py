"""Lease owners and the reads that must see one state of the file.

- an owner must be a token from ``new_owner()``: a bad one is refused at the call, and a bad
  one already in the file (written by another tool) never makes another process's
  ``lease()``/``reclaim()`` raise;
- a lease whose pid was reused by an unrelated process is taken back (the start time differs);
- ``stats()`` reads its numbers in one read transaction, so they agree with each other.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from durable_analytics.errors import ConfigError
from durable_analytics.store import MessageStore
from durable_analytics.store.identity import HOST, process_start

BIG = 10**9


@pytest.fixture
def make_store(queue_file: Path) -> Iterator[Callable[..., MessageStore]]:
    stores: List[MessageStore] = []

    def make(**options: Any) -> MessageStore:
        store = MessageStore.open(queue_file, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def fill(store: MessageStore, count: int) -> List[int]:
    return store.append_many([(json.dumps({"n": n}), 8) for n in range(count)])


@pytest.mark.parametrize("owner", ["worker-1", "", "a|b", "h|12|x|deadbeef", None, 42])
def test_a_lease_owner_that_is_not_a_token_is_refused_at_the_call(
    make_store: Callable[..., MessageStore], owner: Any
) -> None:
    store = make_store()
    fill(store, 3)
    with pytest.raises(ConfigError, match="new_owner"):
        store.lease(owner, max_messages=10, max_bytes=BIG, lease_seconds=60)
    assert store.stats().ready == 3


def test_a_bad_owner_already_in_the_file_never_breaks_other_takers(
    make_store: Callable[..., MessageStore], queue_file: Path
) -> None:
    store = make_store()
    ids = fill(store, 6)
    expires = time.time() + 1_000
    conn = sqlite3.connect(str(queue_file))
    with conn:  # another tool leased the first two under a name of its own
        conn.execute(
            "INSERT INTO leases (lo, hi, owner, expires, started) VALUES (?, ?, 'bogus', ?, 0)",
            (ids[0], ids[1], expires),
        )
    conn.close()
    other = make_store()
    assert other.reclaim() == 0  # left alone until it expires, and no error
    lease = other.lease(other.new_owner(), max_messages=10, max_bytes=BIG, lease_seconds=10**6)
    assert lease is not None and lease.ids == ids[2:]
    assert other.reclaim(now=expires + 1) == 2  # once expired, taken back like any other


def test_a_lease_whose_pid_was_reused_by_another_process_is_taken_back(
    make_store: Callable[..., MessageStore],
) -> None:
    """The owner's pid is alive, but it is another process (its start time differs)."""
    store = make_store()
    fill(store, 4)
    other = make_store()
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start(unrelated.pid)
        assert start is not None and start.isdigit()
        reused = f"{HOST}|{unrelated.pid}|{int(start) + 1}|deadbeef"
        assert store.lease(reused, max_messages=2, max_bytes=BIG, lease_seconds=3600)
        assert other.reclaim() == 2
        same = f"{HOST}|{unrelated.pid}|{start}|cafef00d"  # the live process itself
        assert store.lease(same, max_messages=2, max_bytes=BIG, lease_seconds=3600)
        assert other.reclaim() == 0 and other.stats().leased == 2
    finally:
        unrelated.kill()
        unrelated.wait()


class _Interleaved:
    """A connection that lets another process commit just before one chosen statement."""

    def __init__(self, conn: sqlite3.Connection, before: str, action: Callable[[], None]):
        self._conn, self._before, self._action = conn, before, action
        self.fired = False

    def execute(self, sql: str, *args: Any) -> Any:
        if not self.fired and self._before in sql:
            self.fired = True
            self._action()
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_stats_see_one_state_of_the_file_while_another_process_commits(
    make_store: Callable[..., MessageStore],
) -> None:
    store = make_store()
    fill(store, 10)
    other = make_store()

    def deliver_everything() -> None:
        owner = other.new_owner()
        lease = other.lease(owner, max_messages=100, max_bytes=BIG, lease_seconds=60)
        other.ack(lease.ids)

    conn = store._db()
    spy = _Interleaved(conn, "FROM messages", deliver_everything)
    store._conn = spy  # type: ignore[assignment]
    try:
        stats = store.stats()
    finally:
        store._conn = conn
    assert spy.fired
    # One state: before the other process's commit (10 ready) or after it (10 delivered).
    assert (stats.ready, stats.delivered) in ((10, 0), (0, 10))
