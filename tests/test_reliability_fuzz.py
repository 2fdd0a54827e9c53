"""Bad input: every public call either stores a valid message or raises the documented error.

Property-based: arbitrary values (wrong types, NaN, lone surrogates, cycles, huge strings,
non-string keys, odd dates) for every argument of identify/track/page/screen/group/alias and
enqueue. Nothing invalid reaches the file: the rows read back with sqlite3 are exactly the
successful calls, each a complete message that the real collector then accepts. The worker
survives raising callbacks and a row that is not JSON.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, List

from reliability_helpers import check_stored, fuzz_client, queue_rows, suite_seed

from durable_analytics import Client
from durable_analytics.testing import Collector

EXAMPLES = 400


def test_every_call_stores_a_valid_message_or_raises_validation_error(
    make_client, collector: Collector, queue_file: Path
) -> None:
    seed = suite_seed()
    # The worker stays idle while fuzzing, so that the file holds exactly what was stored.
    client = make_client(flush_at=1_000_000, flush_interval=3600.0)
    report = fuzz_client(client, examples=EXAMPLES, seed=seed)
    print(report.as_dict())
    why = f"seed={seed}: {report.as_dict()}"

    assert report.tried >= EXAMPLES, why
    assert report.stored > EXAMPLES // 10 and sum(report.rejected.values()) > EXAMPLES // 10, why
    assert client.stats().ready == report.stored, why
    rows = queue_rows(queue_file)
    assert len(rows) == report.stored, why
    stored_ids = [check_stored(data)["messageId"] for _, data, _ in rows]
    assert sorted(stored_ids) == sorted(report.ids), why

    # The server takes every stored message: none is a poison that only the server would see.
    assert client.flush(timeout=20), why
    assert collector.message_ids == set(report.ids), why
    assert all(r.status == 200 for r in collector.requests), why
    assert client.stats().dead == 0


def test_worker_survives_raising_callbacks(make_client, collector: Collector) -> None:
    calls: List[str] = []

    def on_error(exc: Exception, messages: List[Any]) -> None:
        calls.append("error")
        raise RuntimeError("on_error is broken")

    def on_delivery(messages: List[Any]) -> None:
        calls.append("delivery")
        raise ValueError("on_delivery is broken")

    collector.reject_marker = "REJECT-ME"
    client = make_client(
        flush_at=3, max_batch_messages=4, on_error=on_error, on_delivery=on_delivery
    )
    good = [client.track("u", "Fine", {"n": n}).message_id for n in range(10)]
    client.track("u", "Bad", {"x": "REJECT-ME"})
    assert client.flush()
    good += [
        client.track("u", "Later", {"n": n}).message_id for n in range(10)
    ]  # the worker still runs
    assert client.flush()
    assert collector.message_ids == set(good)
    assert "error" in calls and "delivery" in calls
    assert client.stats().dead == 1


def test_a_row_that_is_not_json_is_dead_lettered_and_the_rest_delivered(
    collector: Collector, queue_file: Path
) -> None:
    client = Client(
        "k", endpoint=collector.url, queue_path=queue_file, flush_at=1_000, flush_interval=3600.0
    )
    try:
        before = [client.track("u", "Before", {"n": n}).message_id for n in range(5)]
        conn = sqlite3.connect(str(queue_file))
        with conn:
            conn.execute(
                "INSERT INTO messages (data, size, created) VALUES (?, ?, strftime('%s','now'))",
                ("{not json", 9),
            )
        conn.close()
        after = [client.track("u", "After", {"n": n}).message_id for n in range(5)]
        assert client.flush(timeout=10)
        assert collector.message_ids == set(before + after)
        # The store never hands out a row that is not a JSON object: it is dead-lettered,
        # named by its id, and never sent.
        (letter,) = client.store.dead_letters()
        assert letter.data == "{not json"
        assert letter.http_status is None and "not a JSON object" in letter.reason
        stats = client.stats()
        assert (stats.ready, stats.leased, stats.dead) == (0, 0, 1)
    finally:
        client.shutdown(timeout=0)
