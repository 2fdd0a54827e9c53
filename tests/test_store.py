"""MessageStore in one process, on real SQLite files: what each operation leaves in the file.

Processes, kills and fork are in ``test_store_processes.py``; file locations and permissions
in ``test_paths.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from durable_analytics.errors import ConfigError, QueueCorrupt, QueueError, QueueFull
from durable_analytics.store import SCHEMA_VERSION, Lease, MessageStore

BIG = 10**9


def body(i: int, pad: int = 0) -> str:
    """A message's JSON, as the client stores it."""
    return json.dumps({"type": "track", "messageId": f"m-{i}", "pad": "x" * pad})


def item(i: int, pad: int = 0) -> Tuple[str, int]:
    data = body(i, pad)
    return data, len(data.encode("utf-8"))


# Each queued message a lease covers, with the lease's owner and expiry.
HELD = (
    "SELECT m.id, l.owner, l.expires FROM messages m "
    "JOIN leases l ON m.id BETWEEN l.lo AND l.hi ORDER BY m.id"
)


def raw(path: Path, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Read the file through a separate plain connection: only what was committed is seen."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def make_store(queue_file: Path) -> Iterator[Callable[..., MessageStore]]:
    """Open stores (on ``queue_file`` unless told otherwise); all are closed afterwards."""
    stores: List[MessageStore] = []

    def make(path: Optional[Path] = None, **options: Any) -> MessageStore:
        store = MessageStore.open(path or queue_file, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store) -> MessageStore:
    return make_store()


def lease_all(store: MessageStore, owner: str, **kw: Any) -> Optional[Lease]:
    options = dict(max_messages=1000, max_bytes=BIG, lease_seconds=60)
    options.update(kw)
    return store.lease(owner, **options)


# --------------------------------------------------------------------------------------------
# Settings, durability, schema


@pytest.mark.parametrize("mode, level", [("normal", 1), ("full", 2)])
def test_durability_mode_sets_synchronous_and_wal(make_store, mode: str, level: int) -> None:
    store = make_store(durability=mode)
    assert store._read("PRAGMA synchronous") == [(level,)]
    assert store._read("PRAGMA journal_mode") == [("wal",)]
    assert raw(store.file, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_default_durability_is_normal(store: MessageStore) -> None:
    assert store.durability == "normal"
    assert store._read("PRAGMA synchronous") == [(1,)]


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"durability": "paranoid"}, "use 'normal' or 'full'"),
        ({"overflow": "drop_random"}, "'drop_oldest', 'drop_newest', 'raise'"),
        ({"max_queue_bytes": 0}, "max_queue_bytes=0: use a positive integer"),
        ({"max_queue_messages": -5}, "max_queue_messages=-5: use a positive integer"),
        ({"max_queue_messages": True}, "max_queue_messages=True"),
    ],
)
def test_invalid_settings_raise_config_error(
    queue_file: Path, options: dict, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        MessageStore.open(queue_file, **options)
    assert fragment in str(caught.value)


def test_append_is_committed_when_it_returns(store: MessageStore) -> None:
    first = store.append(body(1))
    ids = store.append_many([item(2), item(3)])
    # A separate connection sees the rows at once: nothing is waiting in an open transaction.
    assert raw(store.file, "SELECT id, data FROM messages ORDER BY id") == [
        (first, body(1)),
        (ids[0], body(2)),
        (ids[1], body(3)),
    ]
    assert first < ids[0] < ids[1]
    assert not store._db().in_transaction


def test_ids_are_never_reused(store: MessageStore) -> None:
    """Flush marks and late acks name rows by id: an id must never come back."""
    ids = store.append_many([item(i) for i in range(3)])
    store.ack(ids)
    assert store.append(body(9)) > max(ids)


def test_late_ack_of_a_lost_lease_deletes_no_newer_message(store: MessageStore) -> None:
    """A taker whose upload outlived its lease acks after another taker already did."""
    ids = store.append_many([item(i) for i in range(3)])
    slow, fast = store.new_owner(), store.new_owner()
    store.lease(slow, max_messages=10, max_bytes=BIG, lease_seconds=5, now=1000.0)
    store.lease(fast, max_messages=10, max_bytes=BIG, lease_seconds=5, now=1010.0)
    assert store.ack(ids) == 3  # the fast taker's ack empties the queue
    newer = store.append_many([item(i) for i in range(3, 6)])

    store.ack(ids)  # the slow taker's ack arrives late

    assert [r[0] for r in raw(store.file, "SELECT id FROM messages ORDER BY id")] == newer
    assert store.stats().ready == 3


# --------------------------------------------------------------------------------------------
# Lease


def test_lease_takes_oldest_first_and_marks_owner_and_expiry(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(10)])
    owner = store.new_owner()
    lease = store.lease(owner, max_messages=4, max_bytes=BIG, lease_seconds=30, now=1000.0)
    assert lease.ids == ids[:4]
    assert [row.data for row in lease.rows] == [body(i) for i in range(4)]
    assert lease.owner == owner and lease.expires == 1030.0
    assert raw(store.file, HELD) == [(i, owner, 1030.0) for i in ids[:4]]
    # One lease row names the range; the messages themselves are not rewritten.
    assert raw(store.file, "SELECT lo, hi, owner FROM leases") == [(ids[0], ids[3], owner)]
    assert store.stats().leased == 4 and store.stats().ready == 6


def test_second_owner_gets_the_next_rows_never_the_same(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(7)])
    first = store.lease(store.new_owner(), max_messages=3, max_bytes=BIG, lease_seconds=30)
    second = store.lease(store.new_owner(), max_messages=3, max_bytes=BIG, lease_seconds=30)
    third = store.lease(store.new_owner(), max_messages=3, max_bytes=BIG, lease_seconds=30)
    assert (first.ids, second.ids, third.ids) == (ids[:3], ids[3:6], ids[6:])
    assert store.lease(store.new_owner(), max_messages=3, max_bytes=BIG, lease_seconds=30) is None


def test_lease_respects_byte_budget_counting_one_separator_per_message(
    store: MessageStore,
) -> None:
    store.append_many([("{}", 10)] * 5)  # the stored size is what counts
    # Three messages cost 3 * (10 + 1) = 33 bytes: a budget of 33 fits three, 32 only two.
    assert len(lease_all(store, store.new_owner(), max_bytes=33).rows) == 3
    assert len(lease_all(store, store.new_owner(), max_bytes=21).rows) == 1
    assert store.stats().ready == 1


def test_message_bigger_than_budget_is_leased_alone(store: MessageStore) -> None:
    big, small = store.append_many([("{}", 100), ("{}", 1)])
    lease = lease_all(store, store.new_owner(), max_bytes=50)
    assert lease.ids == [big]
    assert lease_all(store, store.new_owner(), max_bytes=50).ids == [small]


def test_lease_work_does_not_grow_with_the_backlog(make_store, tmp_path: Path) -> None:
    """Count SQLite VM steps (deterministic, unlike time) for a lease on 1k and 200k rows."""

    def steps(store: MessageStore) -> int:
        # Both connections: the batch is read on the side one, the lease written on the other.
        conns = [store._db(), store._side_connection()]
        counted = [0]

        def tick() -> int:
            counted[0] += 1
            return 0

        statements: List[str] = []
        for conn in conns:
            conn.set_trace_callback(statements.append)
            conn.set_progress_handler(tick, 1)
        try:
            lease = store.lease(
                store.new_owner(), max_messages=100, max_bytes=BIG, lease_seconds=30
            )
        finally:
            for conn in conns:
                conn.set_progress_handler(None, 1)
                conn.set_trace_callback(None)
        assert len(lease.rows) == 100
        assert any("FROM messages" in sql for sql in statements)
        for sql in statements:
            if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                plan = " ".join(row[-1] for row in conns[0].execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert "TEMP B-TREE FOR ORDER BY" not in plan, (sql, plan)
                assert "SCAN messages" not in plan, (sql, plan)
        return counted[0]

    small = make_store(tmp_path / "small.sqlite3", max_queue_bytes=None)
    small.append_many([item(i) for i in range(1000)])
    big = make_store(tmp_path / "big.sqlite3", max_queue_bytes=None)
    chunk = [item(0)] * 20_000
    for _ in range(10):
        big.append_many(chunk)
    assert big.stats().ready == 200_000
    small_steps, big_steps = steps(small), steps(big)
    assert big_steps < small_steps * 1.5, (small_steps, big_steps)


def test_a_lease_is_one_row_and_an_ack_one_range_delete(store: MessageStore) -> None:
    """What makes the worker's transactions short: nothing is written per leased message."""
    ids = store.append_many([item(i) for i in range(500)])
    conn = store._db()
    statements: List[str] = []
    conn.set_trace_callback(statements.append)
    try:
        lease = lease_all(store, store.new_owner(), max_messages=500)
        leasing = list(statements)
        statements.clear()
        assert store.ack(lease.ids) == 500
    finally:
        conn.set_trace_callback(None)
    assert lease.ids == ids
    writes = [sql for sql in leasing if sql.lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert len(writes) == 1 and "INTO leases" in writes[0], leasing
    assert not any(sql.lstrip().upper().startswith("UPDATE MESSAGES") for sql in statements)
    assert [sql for sql in statements if "DELETE FROM messages" in sql] == [
        f"DELETE FROM messages WHERE id BETWEEN {ids[0]} AND {ids[-1]}"
    ]
    assert raw(store.file, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert raw(store.file, "SELECT COUNT(*) FROM leases") == [(0,)]  # the empty lease is gone


def test_a_batch_read_before_another_taker_leased_it_is_read_again(
    store: MessageStore, make_store
) -> None:
    """The batch is read outside the write lock; the lease checks nobody took it meanwhile."""
    ids = store.append_many([item(i) for i in range(6)])
    other = make_store()  # another process on the same file
    mine, theirs = store.new_owner(), other.new_owner()
    original = store._ready_rows
    raced = []

    def read_then_lose_the_race(conn: sqlite3.Connection, limit: int, max_bytes: int) -> Any:
        rows = original(conn, limit, max_bytes)
        if not raced:  # between this read and our lease, the other process leases 3 of them
            raced.append(other.lease(theirs, max_messages=3, max_bytes=BIG, lease_seconds=30))
        return rows

    store._ready_rows = read_then_lose_the_race  # type: ignore[method-assign]
    lease = store.lease(mine, max_messages=10, max_bytes=BIG, lease_seconds=30)

    assert raced[0].ids == ids[:3]
    assert lease.ids == ids[3:]
    assert dict((r[0], r[1]) for r in raw(store.file, HELD)) == {
        **{i: theirs for i in ids[:3]},
        **{i: mine for i in ids[3:]},
    }


def test_a_row_holding_the_batch_separator_is_dead_lettered_and_the_rest_read_exactly(
    store: MessageStore,
) -> None:
    """A batch is read as one aggregated row split on char(30). JSON cannot hold that raw
    character, so a row (not written by this library) that does is not JSON: the read falls
    back to row by row, and that row goes to the dead letters."""
    odd = '{"type":"track","note":"a\x1eb"}'
    ids = [store.append(body(0)), store.append(odd), store.append(body(2))]
    lease = lease_all(store, store.new_owner())
    assert lease.ids == [ids[0], ids[2]]
    assert [row.data for row in lease.rows] == [body(0), body(2)]
    assert [row.size for row in lease.rows] == [len(body(0)), len(body(2))]
    (dead,) = store.dead_letters()
    assert (dead.data, dead.reason) == (odd, f"row {ids[1]}: its text is not a JSON object")


def test_releasing_part_of_a_lease_keeps_the_rest_held(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(10)])
    owner, other = store.new_owner(), store.new_owner()
    lease_all(store, owner)
    middle = ids[3:6]

    assert store.release(owner, middle, error="HTTP 503", retry_at=0) == (3, [])

    held = raw(store.file, HELD)
    assert [row[0] for row in held] == ids[:3] + ids[6:]
    assert raw(store.file, "SELECT lo, hi FROM leases ORDER BY lo") == [
        (ids[0], ids[2]),
        (ids[6], ids[9]),
    ]
    assert (store.stats().ready, store.stats().leased) == (3, 7)
    # Another taker gets exactly the released rows, never a held one.
    assert lease_all(store, other).ids == middle
    assert store.extend(owner, ids, 600) == 7  # only what the owner still holds
    assert store.ack(ids[:3] + ids[6:]) == 7
    assert raw(store.file, "SELECT owner FROM leases") == [(other,)]


def test_dead_letters_from_the_middle_of_a_lease(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(5)])
    owner = store.new_owner()
    lease_all(store, owner)
    assert store.dead_letter(owner, [ids[2]], http_status=400, reason="bad userId") == 1
    assert [row[0] for row in raw(store.file, HELD)] == ids[:2] + ids[3:]
    assert store.ack(ids[:2] + ids[3:]) == 4
    assert raw(store.file, "SELECT COUNT(*) FROM leases") == [(0,)]
    assert [(d.data, d.http_status) for d in store.dead_letters()] == [(body(2), 400)]


def test_expired_lease_is_taken_by_another_owner(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(3)])
    first, second = store.new_owner(), store.new_owner()
    assert (
        store.lease(first, max_messages=10, max_bytes=BIG, lease_seconds=5, now=1000.0).ids == ids
    )
    # Before expiry nobody else gets them; after it, the next taker does.
    assert store.lease(second, max_messages=10, max_bytes=BIG, lease_seconds=5, now=1004.0) is None
    retaken = store.lease(second, max_messages=10, max_bytes=BIG, lease_seconds=60, now=1006.0)
    assert retaken.ids == ids and retaken.owner == second


def test_stale_owner_cannot_touch_a_lease_it_lost(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(3)])
    first, second = store.new_owner(), store.new_owner()
    store.lease(first, max_messages=10, max_bytes=BIG, lease_seconds=5, now=1000.0)
    store.lease(second, max_messages=10, max_bytes=BIG, lease_seconds=3600, now=1010.0)
    before = raw(store.file, "SELECT id, attempts, error FROM messages"), raw(store.file, HELD)

    assert store.release(first, ids, error="late failure", retry_at=0) == (0, [])
    assert store.dead_letter(first, ids, http_status=400, reason="late rejection") == 0
    assert store.extend(first, ids, 10_000) == 0

    after = raw(store.file, "SELECT id, attempts, error FROM messages"), raw(store.file, HELD)
    assert after == before
    assert store.dead_letters() == []
    assert {row[1] for row in before[1]} == {second} and len(before[1]) == len(ids)


def test_lease_of_another_host_is_kept_until_it_expires(store: MessageStore) -> None:
    """A pid on another host cannot be checked, so only expiry frees its lease."""
    ids = store.append_many([item(i) for i in range(2)])
    remote = "some-other-host|1|12345|cafebabe"
    store.lease(remote, max_messages=10, max_bytes=BIG, lease_seconds=30, now=1000.0)
    assert store.reclaim(now=1029.0) == 0
    assert (
        store.lease(store.new_owner(), max_messages=10, max_bytes=BIG, lease_seconds=30, now=1029.0)
        is None
    )
    assert (
        store.lease(
            store.new_owner(), max_messages=10, max_bytes=BIG, lease_seconds=30, now=1031.0
        ).ids
        == ids
    )


# --------------------------------------------------------------------------------------------
# Ack, release, dead letters


def test_ack_deletes_rows_counts_them_and_clears_backoff(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(5)])
    owner = store.new_owner()
    lease = lease_all(store, owner, max_messages=3)
    store.release(owner, lease.ids, error="503", retry_at=time.time() + 60)
    assert store.backoff().failures == 1
    lease = lease_all(store, owner, max_messages=3)
    before = store.stats()

    assert store.ack(lease.ids) == 3

    after = store.stats()
    assert (after.ready, after.leased, after.delivered) == (2, 0, before.delivered + 3)
    assert after.queued_bytes == sum(size for _, size in (item(3), item(4)))
    assert raw(store.file, "SELECT id FROM messages ORDER BY id") == [(i,) for i in ids[3:]]
    backoff = store.backoff()
    assert (backoff.retry_at, backoff.failures) == (0, 0)
    assert raw(store.file, "SELECT delivered FROM state") == [(3,)]


def test_release_puts_rows_back_with_error_and_persisted_backoff(
    store: MessageStore, make_store
) -> None:
    ids = store.append_many([item(i) for i in range(3)])
    owner = store.new_owner()
    lease = lease_all(store, owner, max_messages=2)
    retry_at = time.time() + 120

    assert store.release(owner, lease.ids, error="HTTP 503", retry_at=retry_at) == (2, [])

    rows = raw(store.file, "SELECT id, attempts, error FROM messages ORDER BY id")
    assert rows == [(ids[0], 1, "HTTP 503"), (ids[1], 1, "HTTP 503"), (ids[2], 0, None)]
    assert raw(store.file, HELD) == []
    assert raw(store.file, "SELECT retry_at, failures, last_error FROM state") == [
        (retry_at, 1, "HTTP 503")
    ]
    other = make_store()  # a second object (as another process would) reads the same backoff
    assert other.backoff() == store.backoff()
    assert (other.backoff().retry_at, other.backoff().failures) == (retry_at, 1)
    # Released rows come back first, in their old order.
    assert lease_all(other, other.new_owner()).ids == ids


def test_release_gives_up_on_rows_first_tried_too_long_ago(store: MessageStore) -> None:
    old = store.append_many([item(i) for i in range(2)])
    owner = store.new_owner()
    store.lease(owner, max_messages=10, max_bytes=BIG, lease_seconds=30, now=1000.0)
    store.release(owner, old, error="503", retry_at=0)
    new = store.append_many([item(i) for i in range(2, 4)])
    lease = store.lease(owner, max_messages=10, max_bytes=BIG, lease_seconds=30, now=2000.0)
    assert lease.ids == old + new

    released, dead = store.release(
        owner, lease.ids, error="503 again", retry_at=0, give_up_before=1500.0
    )

    assert (released, sorted(dead)) == (2, old)
    letters = store.dead_letters()
    assert [(d.data, d.http_status, d.reason, d.attempts) for d in letters] == [
        (body(i), None, "gave up retrying: 503 again", 2) for i in range(2)
    ]
    stats = store.stats()
    assert (stats.ready, stats.leased, stats.dead) == (2, 0, 2)
    assert [r[0] for r in raw(store.file, "SELECT id FROM messages ORDER BY id")] == new
    assert raw(store.file, HELD) == []


def test_failed_uploads_count_every_failed_attempt_in_the_file(make_store) -> None:
    """All time and file-wide: every store object (as every process) counts into the file and
    reads the same figure, and a success ends only the run of failures. An attempt given back
    without counting (not the batch's fault) and a rejection are not failed uploads."""
    first, second = make_store(), make_store()
    first.append_many([item(i) for i in range(4)])
    a, b = first.new_owner(), second.new_owner()
    first.release(a, lease_all(first, a, max_messages=2).ids, error="HTTP 500", retry_at=None)
    second.release(b, lease_all(second, b, max_messages=2).ids, error="HTTP 503", retry_at=None)
    lease = lease_all(first, a, max_messages=2)
    first.release(a, lease.ids, error="another sends the probe", retry_at=None, count_failure=False)
    lease = lease_all(second, b)
    second.dead_letter(b, lease.ids[:1], http_status=400, reason="bad userId")
    second.release(b, lease.ids[1:], error="timed out", retry_at=None)

    assert [s.stats().failed_uploads for s in (first, second)] == [3, 3]
    assert raw(first.file, "SELECT failed_uploads, failures FROM state") == [(3, 3)]
    assert second.stats().as_dict()["failed_uploads"] == 3

    assert first.ack(lease_all(first, a).ids) == 3
    after = second.stats()
    assert (after.delivered, after.failures_in_a_row, after.failed_uploads) == (3, 0, 3)

    first.append(body(9))
    second.release(b, lease_all(second, b).ids, error="HTTP 502", retry_at=None)
    after = first.stats()
    assert (after.failures_in_a_row, after.failed_uploads) == (1, 4)


def test_dead_letter_keeps_status_and_reason_then_requeue_and_purge(store: MessageStore) -> None:
    ids = store.append_many([item(i) for i in range(6)])
    owner = store.new_owner()
    lease_all(store, owner)
    assert store.dead_letter(owner, ids[:4], http_status=400, reason="bad request: userId") == 4
    store.ack(ids[4:])

    letters = store.dead_letters()
    assert [(d.data, d.http_status, d.reason) for d in letters] == [
        (body(n), 400, "bad request: userId") for n in range(4)
    ]
    assert all(d.dead_at >= d.created for d in letters)
    dead_ids = [d.id for d in letters]
    stats = store.stats()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 4)
    assert stats.last_error == "bad request: userId"
    assert [d.data for d in store.dead_letters(limit=2, offset=1)] == [body(1), body(2)]

    def leased_bodies() -> List[str]:
        lease = lease_all(store, owner)
        store.ack(lease.ids)
        return [row.data for row in lease.rows]

    assert store.requeue_dead(older_than=3600) == 0  # none has been dead for an hour
    assert store.requeue_dead(ids=[]) == 0
    assert store.requeue_dead(ids=[dead_ids[1]]) == 1
    assert store.stats().dead == 3
    assert leased_bodies() == [body(1)]

    assert store.purge_dead(ids=[dead_ids[0]]) == 1
    assert store.requeue_dead(older_than=0) == 2
    lease = lease_all(store, owner)
    assert [row.data for row in lease.rows] == [body(2), body(3)]
    assert store.dead_letter(owner, lease.ids, http_status=413, reason="too large") == 2
    assert [(d.data, d.http_status) for d in store.dead_letters()] == [
        (body(2), 413),
        (body(3), 413),
    ]
    assert store.requeue_dead() == 2  # all of them
    lease = lease_all(store, owner)
    assert [row.data for row in lease.rows] == [body(2), body(3)]
    store.dead_letter(owner, lease.ids, http_status=400, reason="still bad")
    assert store.purge_dead() == 2
    stats = store.stats()
    assert (stats.ready, stats.dead, stats.queued_bytes) == (0, 0, 0)
    assert store.dead_letters() == []


# --------------------------------------------------------------------------------------------
# Counts


def test_stats_come_from_the_file(store: MessageStore, make_store) -> None:
    long_ago = time.time() - 100
    ids = store.append_many([item(i) for i in range(5)], now=long_ago)
    store.append(body(5))
    owner = store.new_owner()
    lease = lease_all(store, owner, max_messages=2)
    store.dead_letter(owner, lease.ids[:1], http_status=400, reason="nope")

    stats, other = store.stats(), make_store().stats()
    assert stats.as_dict() | {"bytes": 0, "oldest_age_seconds": 0} == other.as_dict() | {
        "bytes": 0,
        "oldest_age_seconds": 0,
    }
    assert (stats.ready, stats.leased, stats.dead) == (4, 1, 1)
    assert stats.queued_bytes == sum(size for _, size in [item(i) for i in range(6)])
    assert 100 <= stats.oldest_age_seconds < 200
    on_disk = [store.file, Path(f"{store.file}-wal"), Path(f"{store.file}-shm")]
    assert stats.file_bytes == sum(p.stat().st_size for p in on_disk if p.exists()) > 0
    assert stats.path == str(store.file)

    store.ack(ids[1:])
    assert store.stats().oldest_age_seconds < 100  # only the row appended now is waiting


def test_empty_queue_stats(store: MessageStore) -> None:
    stats = store.stats()
    assert (stats.ready, stats.leased, stats.dead, stats.queued_bytes) == (0, 0, 0, 0)
    assert stats.oldest_age_seconds is None and stats.retry_at is None


# --------------------------------------------------------------------------------------------
# Bounded queue


def kept_ids(store: MessageStore) -> List[int]:
    return [r[0] for r in raw(store.file, "SELECT id FROM messages ORDER BY id")]


def drop_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "durable_analytics" and r.levelno == logging.WARNING
    ]


def test_drop_oldest_deletes_oldest_unleased_rows_counts_and_warns(
    make_store, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(max_queue_messages=5, overflow="drop_oldest")
    ids = store.append_many([item(i) for i in range(5)])
    lease = lease_all(store, store.new_owner(), max_messages=1)  # the oldest is in flight
    caplog.set_level(logging.WARNING, logger="durable_analytics")

    new = [store.append(body(i)) for i in range(5, 7)]

    assert kept_ids(store) == [lease.ids[0], *ids[3:], *new]  # ids[1] and ids[2] were dropped
    assert store.stats().dropped == 2
    warnings = drop_warnings(caplog)
    assert warnings and f"queue {store.file} is full (overflow=drop_oldest)" in warnings[0]
    assert "dropped 1 message(s)" in warnings[0]


def test_drop_oldest_makes_room_for_a_batch(make_store) -> None:
    store = make_store(max_queue_messages=4)
    ids = store.append_many([item(i) for i in range(4)])
    new = store.append_many([item(i) for i in range(4, 7)])
    assert kept_ids(store) == ids[3:] + new
    assert store.stats().dropped == 3


def test_drop_newest_refuses_the_new_message_and_counts_it(
    make_store, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(max_queue_messages=5, overflow="drop_newest")
    ids = store.append_many([item(i) for i in range(5)])
    caplog.set_level(logging.WARNING, logger="durable_analytics")

    assert store.append(body(5)) is None
    assert store.append_many([item(6), item(7)]) == []

    assert kept_ids(store) == ids
    assert store.stats().dropped == 3
    assert "overflow=drop_newest" in drop_warnings(caplog)[0]
    store.ack(ids[:1])
    assert store.append(body(8)) is not None  # room again


def test_raise_policy_raises_queue_full_and_stores_nothing(make_store) -> None:
    store = make_store(max_queue_messages=5, overflow="raise")
    ids = store.append_many([item(i) for i in range(5)])
    with pytest.raises(QueueFull) as caught:
        store.append(body(5))
    text = str(caught.value)
    assert str(store.file) in text and "was not stored" in text
    assert "durable-analytics drain" in text and "raise max_queue_bytes" in text
    assert isinstance(caught.value, QueueError)
    with pytest.raises(QueueFull):
        store.append_many([item(6)])
    assert kept_ids(store) == ids
    assert store.stats().dropped == 0
    assert store.full()


BYTE_LIMIT = 64 * 1024
KB_MESSAGES = [item(i, pad=1000) for i in range(200)]  # 200 KB in all: three times the limit


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest", "raise"])
def test_byte_limit_holds_under_each_policy(
    make_store, caplog: pytest.LogCaptureFixture, overflow: str
) -> None:
    """Appended one by one, 200 KB into a 64 KB queue: what is kept fits, and every message
    is accounted for as kept, dropped (counted and logged) or refused with QueueFull."""
    store = make_store(max_queue_bytes=BYTE_LIMIT, overflow=overflow)
    caplog.set_level(logging.WARNING, logger="durable_analytics")
    returned: List[Optional[int]] = []
    with pytest.raises(QueueFull) if overflow == "raise" else contextlib.nullcontext():
        for data, size in KB_MESSAGES:
            returned.append(store.append(data, size))

    stats = store.stats()
    kept = kept_ids(store)
    assert 0 < stats.queued_bytes <= BYTE_LIMIT
    assert len(kept) == stats.ready > 20
    stored = [i for i in returned if i is not None]
    if overflow == "drop_oldest":
        assert len(stored) == 200 and kept == stored[-len(kept) :]  # the newest survive
        assert stats.dropped == 200 - len(kept)
    elif overflow == "drop_newest":
        assert kept == stored and returned[len(kept) :] == [None] * (200 - len(kept))
        assert stats.dropped == 200 - len(kept)
    else:
        assert kept == stored == returned and len(returned) < 200
        assert stats.dropped == 0
    assert bool(drop_warnings(caplog)) == (overflow != "raise")


# --------------------------------------------------------------------------------------------
# Disk use


def test_disk_space_is_reused_and_wal_bounded(make_store) -> None:
    store = make_store(max_queue_bytes=None)
    page = store._read("PRAGMA page_size")[0][0]
    keep = store._read("PRAGMA journal_size_limit")[0][0]
    auto_pages = store._read("PRAGMA wal_autocheckpoint")[0][0]
    assert 0 < keep <= 64 * 1024 * 1024 and auto_pages > 0  # the WAL is capped and checkpointed
    wal = Path(f"{store.file}-wal")
    owner = store.new_owner()
    sizes, wal_sizes = [], []
    for cycle in range(1, 31):
        store.append_many([item(i, pad=1000) for i in range(300)])
        while (lease := lease_all(store, owner, max_messages=100)) is not None:
            store.ack(lease.ids)
        wal_sizes.append(wal.stat().st_size)
        if cycle % 5 == 0:
            store.checkpoint()
            assert wal.stat().st_size == 0
            sizes.append(store.file.stat().st_size)
    assert raw(store.file, "SELECT COUNT(*) FROM messages") == [(0,)]
    # After a checkpoint the WAL is written from its start again: it never outgrows what five
    # cycles write, although 30 cycles (9 MB of messages) went through it.
    assert max(wal_sizes) <= max(wal_sizes[:5]) + page * 16
    assert sizes[-1] <= sizes[0]  # freed pages were reused: the file did not grow


def test_worker_maintenance_stops_the_wal_from_growing(make_store) -> None:
    """The worker calls maintain() between batches: about 50 MB go through the WAL, and once
    maintain() has checkpointed, the WAL file grows no further."""
    store = make_store(max_queue_bytes=None)
    wal = Path(f"{store.file}-wal")
    owner = store.new_owner()
    checkpoints, wal_sizes = 0, []
    for _ in range(40):
        store.append_many([item(i, pad=1000) for i in range(300)])
        while (lease := lease_all(store, owner, max_messages=100)) is not None:
            store.ack(lease.ids)
        checkpoints += store.maintain()
        wal_sizes.append(wal.stat().st_size)
    assert checkpoints >= 1
    assert max(wal_sizes[20:]) <= max(wal_sizes[:20])


def test_vacuum_shrinks_the_file(make_store) -> None:
    store = make_store(max_queue_bytes=None)
    ids = store.append_many([item(i, pad=2000) for i in range(2000)])
    store.checkpoint()
    full = store.file.stat().st_size
    store.ack(ids)
    store.checkpoint()
    assert store.file.stat().st_size == full  # deleted rows leave free pages behind
    store.vacuum()
    assert store.file.stat().st_size < full / 10
    assert store.append(body(1)) is not None  # still usable


# --------------------------------------------------------------------------------------------
# Damage and schema version


def test_random_bytes_file_is_reported_corrupt_and_left_untouched(queue_file: Path) -> None:
    queue_file.parent.mkdir(parents=True)
    queue_file.write_bytes(os.urandom(8192))
    digest = file_digest(queue_file)
    with pytest.raises(QueueCorrupt) as caught:
        MessageStore.open(queue_file)
    text = str(caught.value)
    assert str(queue_file) in text and "Nothing was deleted" in text
    assert f"mv '{queue_file}' '{queue_file}.broken'" in text
    assert file_digest(queue_file) == digest


def test_damaged_pages_raise_queue_corrupt_on_use(make_store, queue_file: Path) -> None:
    store = make_store()
    store.append_many([item(i, pad=300) for i in range(300)])
    store.checkpoint()
    store.close()
    with open(queue_file, "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(random.Random(3).randbytes(4096 * 4))
    damaged = file_digest(queue_file)
    with pytest.raises(QueueCorrupt, match="move it aside"):
        reopened = make_store()
        reopened.lease(reopened.new_owner(), max_messages=1000, max_bytes=BIG, lease_seconds=5)
    assert file_digest(queue_file) == damaged


def test_sqlite_file_of_another_program_is_refused(queue_file: Path) -> None:
    queue_file.parent.mkdir(parents=True)
    conn = sqlite3.connect(str(queue_file))
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    conn.commit()
    conn.close()
    digest = file_digest(queue_file)
    with pytest.raises(QueueCorrupt) as caught:
        MessageStore.open(queue_file)
    text = str(caught.value)
    assert str(queue_file) in text and "not a durable-analytics queue" in text
    assert "'users'" in text and "point queue_path at another file" in text
    assert file_digest(queue_file) == digest
    assert raw(queue_file, "SELECT email FROM users") == [("a@example.com",)]


def test_file_from_a_newer_version_asks_for_an_upgrade(make_store, queue_file: Path) -> None:
    make_store().append(body(1))
    conn = sqlite3.connect(str(queue_file))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(QueueError) as caught:
        MessageStore.open(queue_file)
    text = str(caught.value)
    assert not isinstance(caught.value, QueueCorrupt)
    assert str(queue_file) in text and "upgrade durable-analytics" in text
    assert f"schema {SCHEMA_VERSION + 1}" in text
    assert raw(queue_file, "SELECT data FROM messages") == [(body(1),)]


def test_a_schema_1_file_is_upgraded_and_keeps_every_message(queue_file: Path) -> None:
    """Schema 1 (the first release) marked each leased row; its leases become ready again."""
    queue_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(str(queue_file))
    conn.executescript(
        """
        CREATE TABLE messages (id INTEGER PRIMARY KEY, data TEXT NOT NULL,
            size INTEGER NOT NULL, created REAL NOT NULL, status INTEGER NOT NULL DEFAULT 1,
            attempts INTEGER NOT NULL DEFAULT 0, first_attempt REAL, lease_owner TEXT,
            lease_expires REAL, error TEXT);
        CREATE INDEX messages_leased ON messages (lease_expires) WHERE status = 2;
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, data TEXT NOT NULL,
            size INTEGER NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL,
            http_status INTEGER, reason TEXT, dead_at REAL NOT NULL);
        CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 0),
            seq INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0, retry_at REAL NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0, last_error TEXT);
        INSERT INTO state (id, seq, delivered) VALUES (0, 7, 40);
        PRAGMA user_version = 1;
        """
    )
    conn.executemany(
        "INSERT INTO messages (id, data, size, created, status, attempts, lease_owner, "
        "lease_expires) VALUES (?, ?, ?, 1000.0, ?, ?, ?, ?)",
        [
            (5, body(5), len(body(5)), 2, 1, "old-host|1|1|abc", 9e9),
            (6, body(6), len(body(6)), 1, 0, None, None),
        ],
    )
    conn.commit()
    conn.close()
    queue_file.chmod(0o600)

    store = MessageStore.open(queue_file)
    try:
        assert raw(queue_file, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(7,)]
        assert raw(queue_file, "SELECT name FROM sqlite_master WHERE type = 'index'") == []
        stats = store.stats()
        assert (stats.ready, stats.leased, stats.delivered, stats.filtered) == (2, 0, 40, 0)
        assert stats.failed_uploads == 0
        new = store.append(body(8))
        assert new == 8  # ids go on from the old high-water mark
        lease = lease_all(store, store.new_owner())
        assert lease.ids == [5, 6, 8]
        assert [row.attempts for row in lease.rows] == [1, 0, 0]
        assert [row.data for row in lease.rows] == [body(5), body(6), body(8)]
    finally:
        store.close()


def test_a_schema_6_file_is_upgraded_and_keeps_its_data_and_counters(queue_file: Path) -> None:
    """Schema 7 adds the all-time count of failed uploads: an older file starts it at 0 and
    keeps its messages, leases, dead letters, destination and every other counter."""
    queue_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(str(queue_file))
    conn.executescript(
        """
        CREATE TABLE messages (id INTEGER PRIMARY KEY, data TEXT NOT NULL,
            size INTEGER NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            first_attempt REAL, error TEXT);
        CREATE TABLE leases (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, owner TEXT NOT NULL,
            expires REAL NOT NULL, started REAL NOT NULL);
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, data TEXT NOT NULL,
            size INTEGER NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL,
            http_status INTEGER, reason TEXT, dead_at REAL NOT NULL);
        CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 0),
            seq INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0,
            filtered INTEGER NOT NULL DEFAULT 0, wal_lost INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0, retry_at REAL NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0, last_error TEXT,
            opened REAL NOT NULL DEFAULT 0);
        INSERT INTO state (id, seq, dropped, filtered, wal_lost, delivered, failures,
            last_error) VALUES (0, 7, 1, 2, 1, 40, 2, 'HTTP 503');
        CREATE TABLE destination (id INTEGER PRIMARY KEY CHECK (id = 0), endpoint TEXT,
            bounded INTEGER NOT NULL DEFAULT 0, max_queue_messages INTEGER,
            max_queue_bytes INTEGER);
        INSERT INTO destination VALUES (0, 'http://127.0.0.1:9/v1/batch', 1, 100, NULL);
        PRAGMA user_version = 6;
        """
    )
    conn.executemany(
        "INSERT INTO messages (id, data, size, created, attempts, first_attempt, error) "
        "VALUES (?, ?, ?, 1000.0, ?, ?, ?)",
        [
            (5, body(5), len(body(5)), 2, 1000.5, "HTTP 503"),
            (6, body(6), len(body(6)), 0, None, None),
        ],
    )
    conn.execute(
        "INSERT INTO dead_letters VALUES (3, ?, ?, 900.0, 1, 400, 'bad userId', 950.0)",
        (body(3), len(body(3))),
    )
    conn.commit()
    conn.close()
    queue_file.chmod(0o600)

    store = MessageStore.open(queue_file)
    try:
        assert raw(queue_file, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(7,)]
        stats = store.stats()
        assert (stats.ready, stats.dead, stats.delivered, stats.dropped) == (2, 1, 40, 1)
        assert (stats.filtered, stats.wal_lost, stats.failures_in_a_row) == (2, 1, 2)
        assert (stats.failed_uploads, stats.last_error) == (0, "HTTP 503")
        assert (stats.endpoint, stats.max_queue_messages) == ("http://127.0.0.1:9/v1/batch", 100)
        assert [(d.id, d.http_status) for d in store.dead_letters()] == [(3, 400)]
        owner = store.new_owner()
        lease = lease_all(store, owner)
        assert [(row.id, row.data, row.attempts) for row in lease.rows] == [
            (5, body(5), 2),
            (6, body(6), 0),
        ]
        store.release(owner, lease.ids, error="HTTP 500", retry_at=None)
        assert (store.stats().failed_uploads, store.stats().failures_in_a_row) == (1, 3)
        assert store.append(body(8)) == 8  # ids go on from the old high-water mark
    finally:
        store.close()
