"""Deleting the -wal and -shm files under a running process loses what they held; it must not
be silent. The running process notices, logs an error, and counts it in the file, so that
every process's stats show it (docs/design.md, "Damage and schema version")."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import List, Tuple

import pytest

from durable_analytics.store import MessageStore


def events(count: int) -> List[Tuple[str, int]]:
    return [(json.dumps({"type": "track", "n": n}), 24) for n in range(count)]


def remove_wal_and_shm(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        os.remove(f"{path}{suffix}")


def test_losing_the_wal_and_shm_under_a_running_process_is_reported(
    queue_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = MessageStore.open(queue_file)
    try:
        ids = running.append_many(events(100))  # committed, in the WAL only
        remove_wal_and_shm(queue_file)
        with caplog.at_level(logging.ERROR, logger="durable_analytics"):
            stats = running.stats()
        assert stats.wal_lost == 1
        assert "-wal and/or -shm files" in caplog.text and str(queue_file) in caplog.text
        assert "lost under a running process" in (stats.last_error or "")
        # No other process used the file meanwhile: closing the connections on the lost
        # files copied what they held into the file, so nothing is missing this time.
        assert stats.ready == len(ids)
        later = MessageStore.open(queue_file)  # any other process sees the flag
        try:
            assert later.stats().wal_lost == 1
        finally:
            later.close()
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="durable_analytics"):
            running.append(*events(1)[0])  # reported once, then appends go on
            assert running.stats().wal_lost == 1
        assert caplog.text == ""
    finally:
        running.close()


def test_an_append_notices_the_loss_without_a_stats_call(
    queue_file: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from durable_analytics.store import wal_watch

    monkeypatch.setattr(wal_watch, "CHECK_INTERVAL", 0.0)
    running = MessageStore.open(queue_file)
    try:
        running.append_many(events(10))
        remove_wal_and_shm(queue_file)
        with caplog.at_level(logging.ERROR, logger="durable_analytics"):
            running.append(*events(1)[0])
        assert "-wal and/or -shm files" in caplog.text
    finally:
        running.close()
    check = MessageStore.open(queue_file)
    try:
        assert check.stats().wal_lost == 1
    finally:
        check.close()


def test_ids_going_back_are_reported_even_when_the_files_look_the_same(
    queue_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process lost the WAL holding our rows (its new WAL is what we see now): the
    next id the file hands out is not above the ids we committed."""
    store = MessageStore.open(queue_file)
    try:
        store.append_many(events(5))
        store._seen_id = 1_000  # as if this object had committed ids up to 1,000 before
        with caplog.at_level(logging.ERROR, logger="durable_analytics"):
            store.append(*events(1)[0])
        assert "a new message got id 6" in caplog.text
        assert store.stats().wal_lost == 1
    finally:
        store.close()


def test_a_normal_life_reports_nothing(queue_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="durable_analytics"):
        for _ in range(3):  # the last close removes -wal and -shm: that is SQLite's own doing
            store = MessageStore.open(queue_file)
            store.append_many(events(20))
            owner = store.new_owner()
            lease = store.lease(owner, max_messages=100, max_bytes=10**6, lease_seconds=60)
            store.ack(lease.ids)
            store.checkpoint()
            store.vacuum()
            assert store.stats().wal_lost == 0
            store.close()
    assert caplog.text == ""
