"""Rows the store cannot read: written by another tool, or a byte flipped on disk.

Such a row goes to the dead letters with a reason naming its id (never its content), and every
other message is delivered. Each bad row is written with the ``sqlite3`` module into a real file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from durable_analytics.messages import Encoder, Track
from durable_analytics.retry import RetryPolicy
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector
from durable_analytics.transport import Transport
from durable_analytics.worker import Worker

SECRET = "PRIVATE-user-4242"
KEY = "rows-key"

# A row whose text is not UTF-8: ``CAST(blob AS TEXT)`` stores the bytes as they are.
NOT_UTF8 = b'{"type":"track","userId":"' + SECRET.encode() + b'","event":"\xff\xfe"}'


def fill(path: Path, count: int) -> List[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    store = MessageStore.open(path)
    encoder = Encoder()
    ids = []
    try:
        for n in range(count):
            encoded = encoder.encode(Track(user_id=f"u{n}", event="Good", properties={"n": n}))
            store.append(encoded.json, encoded.size)
            ids.append(encoded.message_id)
    finally:
        store.close()
    return ids


def insert_raw(path: Path, data: object, size: int = 40) -> int:
    """Write one row as another tool would, bypassing the library; return its id."""
    conn = sqlite3.connect(str(path))
    try:
        with conn:
            cursor = conn.execute(
                "INSERT INTO messages (id, data, size, created) VALUES "
                "((SELECT MAX(id) FROM messages) + 1, CAST(? AS TEXT), ?, 0)",
                (data, size),
            )
        return int(cursor.lastrowid)
    finally:
        conn.close()


def deliver(path: Path, collector: Collector) -> Worker:
    store = MessageStore.open(path)
    transport = Transport(KEY, collector.url)
    try:
        worker = Worker(store, transport, policy=RetryPolicy(initial=0.01, maximum=0.05))
        assert worker.deliver_until(store.last_id(), timeout=10)
        return worker
    finally:
        transport.close()
        store.close()


@pytest.mark.parametrize(
    "bad",
    [NOT_UTF8, b"\xff" + SECRET.encode(), ("not json: " + SECRET).encode()],
    ids=["utf8-in-json", "utf8-start", "not-json"],
)
def test_a_row_that_cannot_be_read_is_dead_lettered_and_the_rest_delivered(
    queue_file: Path, collector: Collector, caplog: pytest.LogCaptureFixture, bad: bytes
) -> None:
    first = fill(queue_file, 50)
    bad_id = insert_raw(queue_file, bad)
    second = fill(queue_file, 50)
    with caplog.at_level(logging.DEBUG, logger="durable_analytics"):
        deliver(queue_file, collector)

    assert [m["messageId"] for m in collector.messages] == first + second
    store = MessageStore.open(queue_file)
    try:
        (dead,) = store.dead_letters()
        stats = store.stats()
    finally:
        store.close()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 1)
    assert str(bad_id) in (dead.reason or "")
    assert SECRET not in (dead.reason or "")
    assert SECRET not in caplog.text


def test_a_dead_letter_that_is_not_utf8_can_be_listed_requeued_and_purged(
    queue_file: Path,
) -> None:
    fill(queue_file, 1)
    insert_raw(queue_file, NOT_UTF8)
    store = MessageStore.open(queue_file)
    try:
        owner = store.new_owner()
        lease = store.lease(owner, max_messages=10, max_bytes=10**6, lease_seconds=30)
        assert lease is not None and len(lease.rows) == 1  # the bad row went to the dead letters
        (dead,) = store.dead_letters()
        assert "not valid UTF-8" in (dead.reason or "")
        assert SECRET in dead.data  # the operator can still see what it was, as text
        assert store.requeue_dead() == 1
        again = store.lease(owner, max_messages=10, max_bytes=10**6, lease_seconds=30)
        assert again is None  # requeued, and at once back among the dead letters
        assert store.purge_dead() == 1
        assert store.stats().dead == 0
    finally:
        store.close()


def test_drain_delivers_around_a_row_that_is_not_utf8_and_exits_0(
    queue_file: Path, collector: Collector, child_env: Dict[str, str]
) -> None:
    first = fill(queue_file, 50)
    insert_raw(queue_file, NOT_UTF8)
    second = fill(queue_file, 50)
    env = {k: v for k, v in child_env.items() if not k.startswith("DURABLE_ANALYTICS_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    result = subprocess.run(
        [sys.executable, "-m", "durable_analytics", "drain", "--queue", str(queue_file)]
        + ["--write-key", KEY, "--endpoint", collector.url, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert json.loads(result.stdout)["left"] == 0
    assert [m["messageId"] for m in collector.messages] == first + second


def test_a_row_with_a_size_that_is_not_a_number_is_dead_lettered(
    queue_file: Path, collector: Collector
) -> None:
    """Any future decode failure of a row, not only its text, takes the same path."""
    first = fill(queue_file, 3)
    conn = sqlite3.connect(str(queue_file))
    with conn:
        conn.execute(
            "INSERT INTO messages (id, data, size, created) VALUES "
            "((SELECT MAX(id) FROM messages) + 1, '{\"type\":\"track\"}', 'many', 'today')"
        )
    conn.close()
    second = fill(queue_file, 3)
    deliver(queue_file, collector)
    assert [m["messageId"] for m in collector.messages] == first + second
