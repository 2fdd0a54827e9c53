"""The module-level API (``import durable_analytics as analytics``): settings, the lazily
created default client, settings changed after it exists, and the segment drop-in check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

import durable_analytics as analytics
from durable_analytics import Client, ConfigError, Track
from durable_analytics.testing import Collector

SCRIPT = Path(__file__).resolve().parent / "dropin_segment_script.py"


@pytest.fixture(autouse=True)
def module_state() -> Iterator[None]:
    """Every test starts from the import-time settings and no default client, and leaves so."""
    saved = {name: getattr(analytics, name) for name in analytics.SETTINGS}
    assert analytics.default_client is None
    yield
    analytics.shutdown(timeout=0)
    for name, value in saved.items():
        setattr(analytics, name, value)
    assert analytics.default_client is None


@pytest.fixture
def configured(collector: Collector, queue_file: Path) -> Collector:
    analytics.write_key = "module-key"
    analytics.host = collector.url
    analytics.queue_path = str(queue_file)
    analytics.flush_interval = 60.0
    return collector


def test_module_calls_go_through_the_default_client(
    configured: Collector, queue_file: Path
) -> None:
    assert analytics.default_client is None
    ids = [
        analytics.identify("u", {"plan": "pro"}).message_id,
        analytics.track("u", "Clicked", {"n": 1}).message_id,
        analytics.page("u", "Docs", "API").message_id,
        analytics.screen("u", "Home", "Feed").message_id,
        analytics.group("u", "g").message_id,
        analytics.alias("old", "u").message_id,
        analytics.enqueue(Track(anonymous_id="a", event="Typed", message_id="typed-1")).message_id,
    ]
    client = analytics.default_client
    assert isinstance(client, Client)
    assert (client.endpoint, client.queue_path, client.flush_interval) == (
        configured.url,
        queue_file,
        60.0,
    )
    assert ids[-1] == "typed-1"
    assert analytics.flush() is True
    assert configured.message_ids == set(ids)
    assert {r.write_key for r in configured.requests} == {"module-key"}
    assert [
        m["type"] for m in sorted(configured.messages, key=lambda m: ids.index(m["messageId"]))
    ] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
        "track",
    ]
    assert analytics.shutdown() is True
    assert analytics.default_client is None


def test_join_delivers(configured: Collector) -> None:
    message_id = analytics.track("u", "e").message_id
    assert analytics.join() is None
    assert configured.message_ids == {message_id}


def test_flush_creates_the_default_client_as_segment_does(configured: Collector) -> None:
    assert analytics.default_client is None
    assert analytics.flush() is True
    assert analytics.default_client is not None
    assert analytics.default_client.host == configured.url
    assert analytics.join() is None
    assert analytics.shutdown() is True
    assert analytics.default_client is None
    assert analytics.shutdown() is True


def test_flush_without_a_write_key_raises_as_segment_does() -> None:
    with pytest.raises(AssertionError, match="write_key is required"):
        analytics.flush()
    assert analytics.default_client is None


def test_missing_write_key_is_a_config_error(collector: Collector) -> None:
    analytics.host = collector.url
    with pytest.raises(ConfigError, match="write_key is required"):
        analytics.track("u", "e")
    assert analytics.default_client is None


def test_invalid_module_setting_fails_at_the_next_call(configured: Collector) -> None:
    analytics.flush_at = 0
    with pytest.raises(ConfigError, match="flush_at=0: use a positive integer"):
        analytics.track("u", "e")
    analytics.flush_at = None
    assert analytics.track("u", "e")


def test_segment_setting_names(configured: Collector) -> None:
    analytics.upload_size = 7
    analytics.upload_interval = 30.0
    analytics.flush_interval = None
    analytics.max_queue_size = 1000
    analytics.gzip = False
    analytics.track("u", "e")
    client = analytics.default_client
    assert client is not None
    assert (client.flush_at, client.flush_interval, client.store.max_queue_messages) == (
        7,
        30.0,
        1000,
    )
    assert analytics.flush() is True
    assert [r.gzip for r in configured.requests] == [False]


def test_changing_host_uses_that_hosts_own_file_and_nothing_goes_astray(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    analytics.write_key = "module-key"
    analytics.host = collector.url
    analytics.flush_interval = 60.0
    before = analytics.track("u", "before").message_id
    first_file = analytics.default_client.queue_path
    with Collector() as second:
        analytics.host = second.url
        assert analytics.default_client is None  # retired, not silently kept
        after = analytics.track("u", "after").message_id
        assert analytics.default_client.endpoint == second.url
        assert analytics.default_client.queue_path != first_file
        assert analytics.flush() is True
        assert second.message_ids == {after}
    analytics.host = collector.url  # the first host's client finds its file again
    again = analytics.track("u", "again").message_id
    assert analytics.default_client.queue_path == first_file
    assert analytics.flush() is True
    assert collector.message_ids == {before, again}


def test_changing_host_on_an_explicit_file_is_refused_at_the_next_call(
    configured: Collector, queue_file: Path
) -> None:
    before = analytics.track("u", "before").message_id
    with Collector() as second:
        analytics.host = second.url
        with pytest.raises(ConfigError, match="belongs to one destination"):
            analytics.track("u", "after")
        assert second.requests == []
    analytics.host = configured.url
    again = analytics.track("u", "again").message_id
    assert analytics.flush() is True
    assert configured.message_ids == {before, again}


def test_changing_a_setting_takes_effect(configured: Collector) -> None:
    analytics.track("u", "e")
    assert analytics.default_client.flush_at == 20
    analytics.flush_at = 1
    message_id = analytics.track("u", "e").message_id
    assert analytics.default_client.flush_at == 1
    assert configured.wait_for(2, timeout=10)
    assert message_id in configured.message_ids


def test_changing_queue_path_keeps_the_old_file(
    configured: Collector, queue_file: Path, tmp_path: Path
) -> None:
    """The retired client stops without sending; the first file keeps its message, and a
    client opened on that file later delivers it."""
    old = analytics.track("u", "old").message_id
    analytics.queue_path = str(tmp_path / "new.sqlite3")
    new = analytics.track("u", "new").message_id
    assert analytics.flush() is True
    assert configured.message_ids == {new}
    with Client(
        "module-key",
        endpoint=configured.url,
        queue_path=queue_file,
        flush_interval=0.05,
        exit_timeout=0,
    ) as later:
        kept = later.stats()  # its worker may already hold it, or have delivered it
        assert kept.ready + kept.leased + kept.delivered == 1
        assert configured.wait_for(2, timeout=10)
    assert configured.message_ids == {old, new}


def test_an_assigned_default_client_is_used(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    own = make_client(flush_interval=60)
    analytics.default_client = own
    message_id = analytics.track("u", "e").message_id
    assert own.stats().ready == 1
    assert analytics.flush() is True
    assert collector.message_ids == {message_id}


def test_import_is_light(child_env: dict) -> None:
    """Importing the package must not pay for HTTP, the queue library or the retry library."""
    code = (
        "import json, sys, durable_analytics; heavy = ('requests', 'persistqueue', 'tenacity'); "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def run_dropin(collector: Collector, env: dict, module: str) -> list:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), collector.url, module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_segment_program_runs_unchanged(
    collector: Collector, child_env: dict, tmp_path: Path
) -> None:
    child_env["XDG_DATA_HOME"] = str(tmp_path / "data")
    ids = run_dropin(collector, child_env, "durable_analytics")
    assert len(ids) == 12 and len(set(ids)) == 12
    assert ids[-1] == "dropin-alias-fixed-id"
    assert collector.message_ids == set(ids)
    assert collector.duplicates == 0
    assert {r.write_key for r in collector.requests} == {"dropin-write-key"}
    by_id = {m["messageId"]: m for m in collector.messages}
    first = by_id[ids[0]]
    assert first["integrations"] == {"All": False, "Vero": True, "Google Analytics": False}
    assert first["context"]["library"]["name"] == "durable-analytics"
    assert by_id[ids[10]]["groupId"] == "99" and by_id[ids[10]]["userId"] == "7"
    assert list((tmp_path / "data" / "durable-analytics").glob("*.sqlite3"))


def test_the_dropin_program_is_really_segments(collector: Collector, child_env: dict) -> None:
    """The same program on segment-analytics-python itself (when installed) also delivers."""
    pytest.importorskip("segment.analytics")
    ids = run_dropin(collector, child_env, "segment.analytics")
    assert len(ids) == 12 and collector.message_ids == set(ids)
    assert {m["context"]["library"]["name"] for m in collector.messages} == {"analytics-python"}
