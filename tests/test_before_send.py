"""``before_send``: scrub, drop (counted as filtered), change (revalidated), and a failing
hook that must cost nothing, through the client and the module API to the collector."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

import pytest

import durable_analytics
from durable_analytics import Client, ConfigError, MessageTooLarge
from durable_analytics.testing import Collector

SECRET = "s3cret-value@example.com"


def test_scrub_and_drop(make_client: Callable[..., Client], collector: Collector) -> None:
    seen = []

    def scrub(message: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        seen.append(message["type"])
        if message.get("event") == "Internal Ping":
            return None
        message.get("properties", {}).pop("email", None)
        return message

    client = make_client(before_send=scrub)
    props = {"email": SECRET, "plan": "pro"}
    kept = client.track("u", "Signed Up", props).message_id
    dropped = client.track("u", "Internal Ping")
    identify = client.identify("u", {"name": "Ann"}).message_id
    assert dropped.success is False and dropped.message["event"] == "Internal Ping"
    assert props == {"email": SECRET, "plan": "pro"}  # the caller's dict is not touched
    assert client.flush()
    assert [m["messageId"] for m in collector.messages] == [kept, identify]
    assert collector.messages[0]["properties"] == {"plan": "pro"}
    assert SECRET not in client.queue_path.read_bytes().decode("utf-8", "replace")
    stats = client.stats()
    assert (stats.filtered, stats.dropped) == (1, 0)
    assert seen == ["track", "track", "identify"]


def test_a_changed_message_is_validated_again(
    make_client: Callable[..., Client], collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def change(message: Dict[str, Any]) -> Dict[str, Any]:
        if message["event"] == "Rename":
            message["event"] = "Renamed"
            message["userId"] = 42  # an int id becomes a string, as at a call
        elif message["event"] == "Break":
            message["timestamp"] = "not a date " + SECRET
        elif message["event"] == "Extra":
            message["surprise"] = SECRET
        return message

    client = make_client(before_send=change)
    ids = [
        client.track("u", name, {"k": SECRET}).message_id for name in ("Rename", "Break", "Extra")
    ]
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    assert by_id[ids[0]]["event"] == "Renamed" and by_id[ids[0]]["userId"] == "42"
    # An invalid answer is reported, and the message is stored as it was.
    assert by_id[ids[1]]["event"] == "Break" and "not a date" not in by_id[ids[1]]["timestamp"]
    assert "surprise" not in by_id[ids[2]]
    assert caplog.text.count("returned an invalid message") == 2
    assert SECRET not in caplog.text


def test_a_raising_hook_keeps_the_message_and_logs_no_content(
    make_client: Callable[..., Client], collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: Dict[str, Any]) -> Dict[str, Any]:
        message["properties"]["email"] = "changed"
        raise KeyError(message["properties"]["secret"])

    client = make_client(before_send=broken)
    with caplog.at_level(logging.ERROR, logger="durable_analytics"):
        message_id = client.track("u", "E", {"secret": SECRET}).message_id
    assert client.flush()
    (message,) = collector.messages
    assert message["messageId"] == message_id
    assert message["properties"] == {"secret": SECRET}  # as it was, not half-changed
    assert "broken raised (KeyError at " in caplog.text
    assert SECRET not in caplog.text


def test_it_runs_before_the_size_check(make_client: Callable[..., Client]) -> None:
    def shrink(message: Dict[str, Any]) -> Dict[str, Any]:
        message["properties"] = {"blob": "trimmed"}
        return message

    big = {"blob": "x" * 40_000}
    assert make_client(before_send=shrink).track("u", "Big", big).success
    with pytest.raises(MessageTooLarge):
        make_client(before_send=lambda m: m).track("u", "Big", big)


def test_without_send_it_still_runs(make_client: Callable[..., Client]) -> None:
    client = make_client(send=False, before_send=lambda m: None)
    assert client.track("u", "E").success is False


def test_it_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="before_send"):
        Client("k", before_send="scrub")


def test_module_level_before_send(
    collector: Collector, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in dict(
        write_key="module-key",
        endpoint=collector.url,
        queue_path=str(tmp_path / "module.sqlite3"),
        before_send=lambda m: None if m["event"] == "Drop" else m,
    ).items():
        monkeypatch.setattr(durable_analytics, name, value)
    try:
        assert durable_analytics.track("u", "Drop").success is False
        kept = durable_analytics.track("u", "Keep").message_id
        assert durable_analytics.flush()
        assert [m["messageId"] for m in collector.messages] == [kept]
        assert durable_analytics.default_client.stats().filtered == 1
    finally:
        durable_analytics.shutdown(timeout=0)
