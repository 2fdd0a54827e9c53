"""Group commit and the buffered committer, over a real queue file and real threads.

Grouping is made deterministic by holding the store's write lock from the test: the first
caller leads and blocks on it, the others queue behind it, and the test releases the lock
once they have all queued (it waits for the queue's length, never for a duration).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from durable_analytics.committer import BufferedCommitter, GroupCommitter, commit_group
from durable_analytics.errors import QueueError, QueueFull
from durable_analytics.store import MessageStore


def _rows(path: Path) -> List[str]:
    with sqlite3.connect(str(path)) as conn:
        return [row[0] for row in conn.execute("SELECT data FROM messages ORDER BY id")]


def _wait_until(predicate: Any) -> None:
    event = threading.Event()
    while not predicate():
        event.wait(0.001)


def _grouped_calls(committer: GroupCommitter, store: MessageStore, count: int) -> Dict[int, Any]:
    """``count`` threads call at once while the test holds the write lock; returns each
    thread's outcome (a row id, None, or the exception it raised)."""
    outcomes: Dict[int, Any] = {}

    def call(n: int) -> None:
        try:
            outcomes[n] = committer.commit(f'{{"n":{n}}}', 7)
        except Exception as exc:
            outcomes[n] = exc

    store.tran_lock.acquire()
    try:
        first = threading.Thread(target=call, args=(0,))
        first.start()
        _wait_until(lambda: committer._busy)
        others = [threading.Thread(target=call, args=(n,)) for n in range(1, count)]
        for thread in others:
            thread.start()
        _wait_until(lambda: len(committer._queue) == count - 1)
    finally:
        store.tran_lock.release()
    for thread in [first, *others]:
        thread.join()
    return outcomes


def test_a_lone_caller_commits_at_once_in_its_own_transaction(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = GroupCommitter(store)
    ids = [committer.commit(f'{{"n":{n}}}', 7) for n in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert committer.counts.commits == 3 and committer.counts.committed == 3
    assert _rows(queue_file) == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert not committer._busy


def test_calls_that_arrive_during_a_commit_share_the_next_one(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = GroupCommitter(store)
    outcomes = _grouped_calls(committer, store, 16)
    assert committer.counts.commits == 2  # the leader's own, then one for the 15 queued
    assert committer.counts.committed == 16
    assert len({outcomes[n] for n in range(16)}) == 16
    stored = _rows(queue_file)
    assert sorted(stored) == sorted(f'{{"n":{n}}}' for n in range(16))
    with sqlite3.connect(str(queue_file)) as conn:
        by_id = dict(conn.execute("SELECT id, data FROM messages"))
    assert all(by_id[outcomes[n]] == f'{{"n":{n}}}' for n in range(16))  # each its own id
    assert not committer._busy and committer._queue == []


def test_many_threads_lose_nothing_and_get_their_own_ids(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = GroupCommitter(store)
    got: Dict[str, int] = {}

    def record(thread: int) -> None:
        for i in range(150):
            data = f'{{"t":{thread},"i":{i}}}'
            got[data] = committer.commit(data, len(data))

    threads = [threading.Thread(target=record, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with sqlite3.connect(str(queue_file)) as conn:
        by_id = dict(conn.execute("SELECT id, data FROM messages"))
    assert len(by_id) == 16 * 150
    assert all(by_id[row_id] == data for data, row_id in got.items())
    assert committer.counts.committed == 16 * 150


def test_overflow_raise_refuses_exactly_the_messages_that_do_not_fit(queue_file: Path) -> None:
    store = MessageStore(queue_file, max_queue_messages=6, overflow="raise")
    committer = GroupCommitter(store)
    outcomes = _grouped_calls(committer, store, 10)
    stored = [o for o in outcomes.values() if isinstance(o, int)]
    refused = [o for o in outcomes.values() if isinstance(o, QueueFull)]
    assert len(stored) == 6 and len(refused) == 4
    assert len(_rows(queue_file)) == 6
    assert committer.counts.failed == 4


def test_overflow_drop_newest_applies_per_message_within_a_group(queue_file: Path) -> None:
    store = MessageStore(queue_file, max_queue_messages=6, overflow="drop_newest")
    committer = GroupCommitter(store)
    outcomes = _grouped_calls(committer, store, 10)
    stored = [n for n, o in outcomes.items() if isinstance(o, int)]
    assert len(stored) == 6
    assert sum(1 for o in outcomes.values() if o is None) == 4
    assert sorted(_rows(queue_file)) == sorted(f'{{"n":{n}}}' for n in stored)


class _FailingStore:
    """A store whose disk refuses one particular message (a full disk cannot be produced on
    demand); everything else goes to a real queue file."""

    def __init__(self, store: MessageStore, refuse: str) -> None:
        self.store, self.refuse = store, refuse

    def append(self, data: str, size: int) -> Optional[int]:
        if data == self.refuse:
            raise QueueError("the disk is full")
        return self.store.append(data, size)

    def append_many(self, items: List[Any]) -> List[int]:
        if any(data == self.refuse for data, _ in items):
            raise QueueError("the disk is full")
        return self.store.append_many(items)


def test_a_failed_commit_reaches_only_the_caller_whose_message_failed(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    outcomes = commit_group(
        _FailingStore(store, '{"n":2}'), [(f'{{"n":{n}}}', 7) for n in range(5)]
    )
    assert [type(o) for o in outcomes] == [int, int, QueueError, int, int]
    assert _rows(queue_file) == ['{"n":0}', '{"n":1}', '{"n":3}', '{"n":4}']


def test_group_errors_are_raised_in_the_calling_thread(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = GroupCommitter(_FailingStore(store, '{"n":3}'))
    outcomes = _grouped_calls(committer, store, 6)  # type: ignore[arg-type]
    assert isinstance(outcomes[3], QueueError)
    assert all(isinstance(outcomes[n], int) for n in (0, 1, 2, 4, 5))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_a_fresh_committer(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = GroupCommitter(store)
    buffered = BufferedCommitter(store, interval=3600)
    buffered.submit('{"parent":"pending"}', 20)
    store.tran_lock.acquire()
    caller = threading.Thread(target=committer.commit, args=('{"parent":1}', 12))
    caller.start()
    _wait_until(lambda: committer._busy)
    pid = os.fork()
    if pid == 0:  # the child: the parent's leader thread does not exist here
        code = 1
        try:
            signal.alarm(30)  # a child that waits for the parent's leader fails, not hangs
            if committer.commit('{"child":1}', 11) and buffered.pending() == 0:
                buffered.submit('{"child":2}', 11)
                buffered.drain()
                code = 0
        finally:
            os._exit(code)
    store.tran_lock.release()
    caller.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    buffered.stop()
    assert sorted(_rows(queue_file)) == sorted(
        ['{"parent":1}', '{"child":1}', '{"child":2}', '{"parent":"pending"}']
    )


def test_buffered_commits_in_the_background_and_drain_commits_the_rest(
    queue_file: Path,
) -> None:
    store = MessageStore(queue_file)
    seen: List[int] = []
    committer = BufferedCommitter(store, interval=0.001, batch=50, on_commit=seen.extend)
    for n in range(120):
        committer.submit(f'{{"n":{n}}}', 7)
    committer.drain()
    assert committer.pending() == 0
    assert _rows(queue_file) == [f'{{"n":{n}}}' for n in range(120)]  # in hand-over order
    assert committer.counts.committed == 120
    assert seen == list(range(seen[0], seen[0] + 120)) and seen[-1] == store.last_id()
    committer.stop()
    assert committer._thread is None
    assert not committer.submit('{"late":1}', 10)  # stopped: the caller commits it itself
    assert committer.pending() == 0


def test_buffered_commits_without_a_drain(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = BufferedCommitter(store, interval=0.001)
    committer.submit('{"n":1}', 7)
    _wait_until(lambda: committer.counts.committed == 1)
    assert _rows(queue_file) == ['{"n":1}']
    committer.stop()


def test_buffered_failures_are_counted_and_kept_as_last_error(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    committer = BufferedCommitter(_FailingStore(store, '{"n":1}'), interval=3600)
    for n in range(3):
        committer.submit(f'{{"n":{n}}}', 7)
    committer.stop()
    assert committer.counts.failed == 1 and committer.counts.committed == 2
    assert isinstance(committer.last_error, QueueError)
    assert _rows(queue_file) == ['{"n":0}', '{"n":2}']


def test_a_buffered_client_counts_what_it_holds_in_stats(make_client) -> None:
    client = make_client(
        durability="buffered", buffer_interval=3600, flush_at=10**6, flush_interval=3600
    )
    for n in range(5):
        client.track("u", f"e{n}")
    before = client.stats()
    assert (before.buffered_pending, before.buffered_committed, before.ready) == (5, 0, 0)
    client.flush(timeout=0.01)
    after = client.stats()
    assert (after.buffered_pending, after.buffered_committed) == (0, 5)
    assert after.as_dict()["buffered_committed"] == 5
    assert after.ready + after.leased + after.delivered == 5


def test_a_group_takes_ids_above_every_id_ever_used_in_row_order(queue_file: Path) -> None:
    """A group is inserted in multi-row statements with ids it counts itself: they must
    follow the high-water mark (ids never come back after a delete) and match their rows."""
    store = MessageStore(queue_file)
    first = store.append_many([(f'{{"old":{n}}}', 9) for n in range(3)])
    store.ack(first)  # the newest rows are gone: SQLite alone would reuse their ids
    items = [(f'{{"n":{n}}}', 7) for n in range(1203)]  # more than one statement's worth
    ids = store.append_many(items)
    assert ids == list(range(first[-1] + 1, first[-1] + 1 + 1203))
    with sqlite3.connect(str(queue_file)) as conn:
        by_id = dict(conn.execute("SELECT id, data FROM messages"))
    assert [by_id[row_id] for row_id in ids] == [data for data, _ in items]


def test_buffered_counts_are_exported_as_metrics(make_client) -> None:
    from durable_analytics.metrics import metric_families

    client = make_client(durability="buffered", buffer_interval=3600, flush_at=10**6)
    client.track("u", "e")
    families = {family.name: family for family in metric_families([client.stats()])}
    held = families["durable_analytics_buffered_messages"]
    assert held.type == "gauge" and [value for _, value in held.samples] == [1.0]
    assert "durable_analytics_buffered_failed_total" in families


@pytest.mark.parametrize(
    "bounds",
    [{}, {"max_queue_messages": 1000}, {"max_queue_bytes": None}],
    ids=["default bytes bound", "and a message bound", "no bounds"],
)
def test_a_lone_append_far_from_its_bounds_is_one_statement(
    queue_file: Path, bounds: Dict[str, Any]
) -> None:
    """Each statement hands the interpreter lock to other threads and waits to get it back:
    the common case must not pay four (BEGIN, insert, bounds check, COMMIT)."""
    store = MessageStore(queue_file, **bounds)
    store.append('{"warm":1}', 10)
    statements: List[str] = []
    store._db().set_trace_callback(statements.append)
    row_id = store.append('{"n":1}', 7)
    store._db().set_trace_callback(None)
    top_level = [sql for sql in statements if not sql.startswith("--")]  # not the pragmas'
    assert len(top_level) == 1 and top_level[0].startswith("INSERT")
    assert _rows(queue_file)[-1] == '{"n":1}' and row_id == store.last_id()


def test_an_append_near_a_bound_takes_the_exact_path(queue_file: Path) -> None:
    store = MessageStore(queue_file, max_queue_messages=3, overflow="drop_newest")
    ids = [store.append(f'{{"n":{n}}}', 7) for n in range(5)]
    assert ids[3:] == [None, None] and len(_rows(queue_file)) == 3
