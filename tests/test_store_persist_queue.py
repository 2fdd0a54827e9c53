"""persist-queue's interface: each test runs on persist-queue's own ``SQLiteAckQueue`` and on
``AckQueue`` (over a durable-analytics queue file) and expects the same answers, so a user
who knows persist-queue finds what they expect. Where the two differ on purpose (an ack
deletes the item; a live process keeps what it took) the test says so; docs/design.md lists
those differences."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import persistqueue.serializers.json as json_serializer
import pytest
from persistqueue.exceptions import Empty
from persistqueue.sqlackqueue import SQLiteAckQueue

from durable_analytics.store import AckQueue, MessageStore

# A waiting item's status: persist-queue says "0" (put, never taken) or "1" (nacked); here "1".
READY = {"0": "ready", "1": "ready"}


@pytest.fixture(params=["persist-queue", "durable-analytics"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "persist-queue":
        made: Any = SQLiteAckQueue(
            str(tmp_path / "pq"), auto_resume=False, serializer=json_serializer
        )
    else:
        made = AckQueue(tmp_path / "queue" / "events.sqlite3")
    made.kind = request.param
    yield made
    if request.param == "durable-analytics":
        made.close()


def test_put_get_ack(queue: Any) -> None:
    first = queue.put({"n": 1, "text": "é"})
    second = queue.put([1, 2])
    third = queue.put("three")
    assert isinstance(first, int) and first < second < third
    assert queue.qsize() == 3 and len(queue) == 3
    assert queue.get() == {"n": 1, "text": "é"}
    raw = queue.get(raw=True)
    assert (raw["pqid"], raw["data"]) == (second, [1, 2]) and raw["timestamp"] > 0
    assert queue.unack_count() == 2 and queue.qsize() == 1 and queue.active_size() == 3
    assert queue.ack(raw) == second
    assert queue.ack(id=first) == first
    assert queue.get_nowait() == "three"
    with pytest.raises(Empty):
        queue.get(block=False)
    with pytest.raises(Empty):
        queue.get(timeout=0.05)
    assert queue.empty() and not queue.full()


def test_ack_by_the_object_get_returned(queue: Any) -> None:
    queue.put({"n": 1})
    item = queue.get()
    assert queue.ack(item) is not None
    assert queue.unack_count() == 0
    with pytest.raises(ValueError):
        queue.ack()
    with pytest.raises(ValueError):
        queue.ack({"pqid": 1}, id=1)


def test_nack_makes_it_ready_again_first_in_line(queue: Any) -> None:
    first, _ = queue.put("a"), queue.put("b")
    assert queue.get() == "a"
    assert queue.nack(id=first) == first
    assert queue.qsize() == 2 and queue.unack_count() == 0
    assert queue.get() == "a"


def test_ack_failed_keeps_it_apart(queue: Any) -> None:
    first = queue.put("bad")
    queue.put("good")
    queue.get()
    assert queue.ack_failed(id=first) == first
    assert queue.ack_failed_count() == 1 and queue.qsize() == 1
    listed = sorted(
        (row["data"], READY.get(str(row["status"]), str(row["status"]))) for row in queue.queue()
    )
    assert listed == [("bad", "9"), ("good", "ready")]
    queue.clear_acked_data(clear_ack_failed=True)  # keeps the latest 1,000
    assert queue.ack_failed_count() == 1
    queue.clear_acked_data(keep_latest=0, clear_ack_failed=True)
    assert queue.ack_failed_count() == 0


def test_get_by_id_and_next_in_order(queue: Any) -> None:
    ids = [queue.put(n) for n in range(4)]
    assert queue.get(id=ids[2]) == 2
    assert queue.get(id=ids[0], next_in_order=True) == 1
    with pytest.raises(ValueError):
        queue.get(next_in_order=True)
    with pytest.raises(ValueError):
        queue.get(timeout=-1)


def test_update_replaces_a_stored_item(queue: Any) -> None:
    queue.put({"v": 1})
    raw = queue.get(raw=True)
    assert queue.update({"pqid": raw["pqid"], "data": {"v": 2}}) == raw["pqid"]
    queue.nack(id=raw["pqid"])
    assert queue.get() == {"v": 2}
    assert queue.update({"v": 3}, id=raw["pqid"]) == raw["pqid"]
    assert [row["data"] for row in queue.queue()] == [{"v": 3}]
    with pytest.raises(ValueError):
        queue.update({"v": 4})


def test_queue_lists_items_with_their_status(queue: Any) -> None:
    queue.put("a")
    queue.put("b")
    queue.get()
    listed = queue.queue()
    statuses = [(row["data"], READY.get(str(row["status"]), str(row["status"]))) for row in listed]
    assert statuses == [("a", "2"), ("b", "ready")]
    assert all(row["timestamp"] > 0 and isinstance(row["id"], int) for row in listed)


def test_ready_count_counts_every_waiting_item_here(queue: Any) -> None:
    """persist-queue's ready_count() counts only nacked items (status 1), not those never
    taken (status 0); here it counts every item waiting, as qsize() does."""
    queue.put("a")
    queue.put("b")
    queue.nack(id=queue.get(raw=True)["pqid"])
    assert queue.ready_count() == (1 if queue.kind == "persist-queue" else 2)


def test_acked_items_are_deleted_at_once_here(queue: Any) -> None:
    """persist-queue keeps acknowledged rows (status 5) until clear_acked_data; here the ack
    deletes them in its own transaction, so the table never grows with history."""
    queue.put("a")
    queue.ack(queue.get(raw=True))
    queue.clear_acked_data()
    queue.task_done()
    queue.shrink_disk_usage()
    assert queue.acked_count() == (1 if queue.kind == "persist-queue" else 0)


def test_resume_unack_tasks_leaves_a_live_takers_items(tmp_path: Path) -> None:
    """persist-queue's resume gives back every unacked item, even one a live process is
    working on; here only the items of expired leases and of gone processes come back."""
    path = tmp_path / "events.sqlite3"
    mine, other = AckQueue(path), AckQueue(path)
    try:
        mine.put("a")
        assert mine.get() == "a"
        other.resume_unack_tasks()
        assert other.unack_count() == 1
        with pytest.raises(Empty):
            other.get(block=False)
    finally:
        mine.close()
        other.close()


def test_items_are_stored_as_json_and_the_queue_file_is_a_durable_analytics_queue(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite3"
    store = MessageStore.open(path)
    queue = AckQueue(store=store)
    try:
        row_id = queue.put({"event": "Signed Up", "n": 1})
        with pytest.raises(TypeError):
            queue.put(object())
        conn = sqlite3.connect(str(path))
        ((data, kind),) = conn.execute(
            "SELECT data, typeof(data) FROM messages WHERE id = ?", (row_id,)
        ).fetchall()
        conn.close()
        assert kind == "text" and json.loads(data) == {"item": {"event": "Signed Up", "n": 1}}
        assert store.stats().ready == 1
    finally:
        queue.close()
