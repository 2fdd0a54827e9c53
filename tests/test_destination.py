"""A queue file belongs to one destination and carries its own bounds: a message is only ever
sent to the endpoint of the client that recorded it, and one client's bound never discards
what another recorded. Against real collectors and real files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import pytest

from durable_analytics import Client, ConfigError
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector

IDLE = {"flush_interval": 60.0, "flush_timeout": 10.0}


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def second() -> Iterator[Collector]:
    with Collector() as collector:
        yield collector


def test_same_key_two_endpoints_default_files_deliver_each_to_its_own(
    data_home: Path, collector: Collector, second: Collector
) -> None:
    a = Client("one-key", host=collector.url, **IDLE)
    b = Client("one-key", host=second.url, **IDLE)
    try:
        assert a.queue_path != b.queue_path
        ids_a = {a.track("u", f"a{n}").message_id for n in range(20)}
        ids_b = {b.track("u", f"b{n}").message_id for n in range(3)}
        assert a.flush() is True and b.flush() is True
        assert collector.message_ids == ids_a
        assert second.message_ids == ids_b
    finally:
        a.shutdown(timeout=0)
        b.shutdown(timeout=0)


def test_a_file_refuses_a_client_for_another_endpoint(
    queue_file: Path, collector: Collector, second: Collector
) -> None:
    a = Client("k", host=collector.url, queue_path=queue_file, **IDLE)
    try:
        recorded = {a.track("u", f"e{n}").message_id for n in range(5)}
        with pytest.raises(ConfigError) as info:
            Client("k", host=second.url, queue_path=queue_file, **IDLE)
        text = str(info.value)
        assert f"holds messages for {collector.url}, not for {second.url}" in text
        assert "Use another queue_path" in text and "durable-analytics drain" in text
        assert a.flush() is True
        assert collector.message_ids == recorded and second.requests == []
    finally:
        a.shutdown(timeout=0)


def test_one_clients_bound_never_discards_anothers_messages(
    queue_file: Path, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    a = Client("k", host=collector.url, queue_path=queue_file, **IDLE)
    try:
        recorded = {a.track("u", f"e{n}").message_id for n in range(5)}
        with caplog.at_level(logging.WARNING, logger="durable_analytics"):
            b = Client("k", host=collector.url, queue_path=queue_file, max_queue_size=1, **IDLE)
        assert any(
            "this client asks for max_queue_messages=1" in r.getMessage() for r in caplog.records
        )
        success, message = b.track("u", "from b")  # b's bound refuses only b's own message
        assert success is False and message["event"] == "from b"
        assert a.stats().ready == 5 and a.stats().max_queue_messages is None
        with pytest.raises(ConfigError, match="would delete messages other clients recorded"):
            Client(
                "k",
                host=collector.url,
                queue_path=queue_file,
                max_queue_size=1,
                overflow="drop_oldest",
                **IDLE,
            )
        assert a.stats().ready == 5 and a.stats().dropped == 1
        assert a.flush() is True
        assert collector.message_ids == recorded
        b.shutdown(timeout=0)
    finally:
        a.shutdown(timeout=0)


def test_the_bound_belongs_to_the_file_and_shows_in_stats(
    queue_file: Path, collector: Collector
) -> None:
    a = Client("k", host=collector.url, queue_path=queue_file, max_queue_messages=3, **IDLE)
    b = Client("k", host=collector.url, queue_path=queue_file, **IDLE)  # asks for nothing
    try:
        assert b.store.max_queue_messages == 3
        stats = b.stats()
        assert (stats.max_queue_messages, stats.endpoint) == (3, collector.url)
        assert stats.as_dict()["max_queue_messages"] == 3
        results = [client.track("u", "e") for client in (a, b, a, b)]
        assert [r.success for r in results] == [True, True, True, False]
        same = Client("k", host=collector.url, queue_path=queue_file, max_queue_size=3, **IDLE)
        same.shutdown(timeout=0)
    finally:
        a.shutdown(timeout=0)
        b.shutdown(timeout=0)


def test_a_file_written_before_destinations_is_claimed_by_its_next_client(
    queue_file: Path, collector: Collector
) -> None:
    store = MessageStore.open(queue_file)
    store.append('{"type":"track","userId":"u","event":"old","messageId":"old-1"}')
    store.close()
    assert store.destination().endpoint is None
    client = Client("k", host=collector.url, queue_path=queue_file, **IDLE)
    try:
        assert client.store.destination().endpoint == collector.url
        assert client.track("u", "new").success and client.flush() is True
        assert "old-1" in collector.message_ids
    finally:
        client.shutdown(timeout=0)


def test_segments_default_endpoint_keeps_the_write_key_file_name(data_home: Path) -> None:
    from durable_analytics.paths import default_queue_path

    assert default_queue_path("k") == default_queue_path("k", "https://api.segment.io")
    assert default_queue_path("k", "http://127.0.0.1:9") != default_queue_path("k")


def test_drain_sends_a_file_to_its_own_endpoint_and_refuses_another(
    queue_file: Path, collector: Collector, second: Collector, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    client = Client("k", host=collector.url, queue_path=queue_file, **IDLE)
    recorded = {client.track("u", f"e{n}").message_id for n in range(3)}
    client.shutdown(timeout=0)
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "DURABLE_ANALYTICS_QUEUE": str(queue_file),
        "DURABLE_ANALYTICS_WRITE_KEY": "k",
    }
    env.pop("DURABLE_ANALYTICS_ENDPOINT", None)

    def drain(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "durable_analytics", "drain", "--timeout", "20", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    refused = drain("--endpoint", second.url)
    assert refused.returncode != 0
    assert f"holds messages for {collector.url}, not for {second.url}" in refused.stderr
    assert second.requests == []
    sent = drain()
    assert sent.returncode == 0, sent.stderr
    assert collector.message_ids == recorded


def test_the_command_line_finds_a_clients_default_file_by_key_and_endpoint(
    data_home: Path, collector: Collector
) -> None:
    import os
    import subprocess
    import sys

    client = Client("cli-key", host=collector.url, **IDLE)
    client.track("u", "e")
    client.shutdown(timeout=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_ANALYTICS_")}
    env["XDG_DATA_HOME"] = str(data_home)
    env["DURABLE_ANALYTICS_ENDPOINT"] = collector.url
    done = subprocess.run(
        [sys.executable, "-m", "durable_analytics", "stats", "--json", "--write-key", "cli-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(client.queue_path)
