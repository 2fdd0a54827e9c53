"""The fixture users get from the installed package (entry point ``pytest11``): their own
analytics calls, tested against the real loopback collector."""

from __future__ import annotations

from pathlib import Path

from durable_analytics import Client
from durable_analytics.testing import Collector


def test_analytics_collector_fixture_receives_a_users_events(
    analytics_collector: Collector, tmp_path: Path
) -> None:
    client = Client(
        "users-own-key",
        endpoint=analytics_collector.url,
        queue_path=tmp_path / "events.sqlite3",
        exit_timeout=0,
    )
    try:
        message_id = client.track("user-1", "Signed Up", {"plan": "Enterprise"}).message_id
        assert client.flush(timeout=10)
    finally:
        client.shutdown(timeout=0)
    assert analytics_collector.message_ids == {message_id}
    assert analytics_collector.requests[0].write_key == "users-own-key"
    assert analytics_collector.messages[0]["properties"] == {"plan": "Enterprise"}
