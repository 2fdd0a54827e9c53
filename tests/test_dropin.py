"""The breaks a segment-analytics-python user hits first, each against the real collector:
return values, exceptions, options, the module API. segment's own client (installed with the
test extra, ``send=False``) is the reference where a shape must match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

import durable_analytics as analytics
from durable_analytics import CallResult, Client
from durable_analytics.testing import Collector

segment_client = pytest.importorskip("segment.analytics.client")

CALLS: Dict[str, Tuple[Any, ...]] = {
    "identify": ("u1", {"plan": "pro"}),
    "track": ("u1", "Clicked", {"n": 1}),
    "page": ("u1",),
    "screen": ("u1", None, "Home"),
    "group": ("u1", "g1", {"size": 3}),
    "alias": ("old", "u1"),
}


@pytest.fixture
def segment() -> Any:
    return segment_client.Client("k", send=False)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_call_unpacks_as_segments_success_and_message(
    name: str, make_client: Any, collector: Collector, segment: Any
) -> None:
    client = make_client(flush_interval=60)
    result = getattr(client, name)(*CALLS[name])
    success, message = result
    seg_success, seg_message = getattr(segment, name)(*CALLS[name])
    assert success is seg_success is True
    assert set(message) == set(seg_message)
    for key, value in seg_message.items():
        if key not in ("messageId", "timestamp", "context"):
            assert message[key] == value, key
    assert isinstance(result, tuple) and isinstance(result, CallResult) and len(result) == 2
    assert result.message_id == message["messageId"] == result.message["messageId"]
    assert result.success is True
    assert client.flush() is True
    assert collector.message_ids == {result.message_id}


def test_the_returned_message_is_what_the_server_receives(
    make_client: Any, collector: Collector
) -> None:
    client = make_client(flush_interval=60)
    _, message = client.track("u", "e", {"when": __import__("datetime").date(2020, 1, 2)})
    assert client.flush() is True
    [sent] = collector.messages
    assert {k: v for k, v in message.items() if v is not None} == sent
    assert message["properties"] == {"when": "2020-01-02"}


def test_module_calls_unpack_too(collector: Collector, queue_file: Any) -> None:
    analytics.write_key = "module-key"
    analytics.host = collector.url
    analytics.queue_path = str(queue_file)
    try:
        success, message = analytics.track("u", "Module Event")
        assert success is True and message["event"] == "Module Event"
        assert analytics.flush() is True
        assert message["messageId"] in collector.message_ids
    finally:
        analytics.shutdown(timeout=0)
        analytics.write_key = analytics.host = analytics.queue_path = None


def test_send_false_returns_success_and_the_message() -> None:
    success, message = Client("k", send=False).track("u", "e")
    assert success is True and message["event"] == "e"


def test_values_segment_accepts_are_recorded_and_delivered(
    make_client: Any, collector: Collector
) -> None:
    client = make_client(flush_interval=60)
    success, message = client.track(1.5, "Odd Values", {"error": KeyError("k"), 3: "three"})
    assert success is True
    assert client.identify("u", {"obj": _Plain()}).success is True
    assert client.flush() is True
    by_event = {m.get("event", m["type"]): m for m in collector.messages}
    sent = by_event["Odd Values"]
    assert sent["userId"] == "1.5"
    assert sent["properties"] == {"error": "'k'", "3": "three"}
    assert by_event["identify"]["traits"] == {"obj": "plain"}


class _Plain:
    def __str__(self) -> str:
        return "plain"


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda c: c.track("u"), AssertionError),  # no event
        (lambda c: c.track(), AssertionError),  # no user
        (lambda c: c.identify("u", ["not", "a", "dict"]), AssertionError),
        (lambda c: c.track("u", "big", {"x": "y" * 40_000}), RuntimeError),
    ],
)
def test_what_segment_raises_is_what_catching_code_gets(
    call: Any, builtin: type, make_client: Any, collector: Collector, segment: Any
) -> None:
    with pytest.raises(builtin):
        call(segment)
    client = make_client(flush_interval=60)
    with pytest.raises(builtin) as info:
        call(client)
    assert isinstance(info.value, analytics.AnalyticsError)
    assert client.stats().ready == 0


def test_a_missing_write_key_raises_what_segment_raises() -> None:
    with pytest.raises(AssertionError):
        segment_client.Client()
    with pytest.raises(AssertionError) as info:
        Client()
    assert isinstance(info.value, analytics.ConfigError)


def test_client_key_host_positional_sends_to_that_host(
    collector: Collector, queue_file: Any
) -> None:
    client = Client("k", collector.url, queue_path=queue_file)
    try:
        assert client.host == collector.url
        assert client.track("u", "Positional").success
        assert client.flush() is True
        assert [m["event"] for m in collector.messages] == ["Positional"]
    finally:
        client.shutdown(timeout=0)


def test_a_falsy_module_on_error_is_ignored_as_segment_ignores_it(
    collector: Collector, queue_file: Any
) -> None:
    analytics.write_key = "module-key"
    analytics.host = collector.url
    analytics.queue_path = str(queue_file)
    analytics.on_error = False
    try:
        assert analytics.track("u", "Falsy on_error").success
        assert analytics.flush() is True
        assert analytics.default_client.host == collector.url
    finally:
        analytics.shutdown(timeout=0)
        analytics.write_key = analytics.host = analytics.queue_path = analytics.on_error = None


def test_segment_only_options_are_accepted(make_client: Any, collector: Collector) -> None:
    client = make_client(
        max_rate_limit_duration=60,
        thread=1,
        oauth_auth_server="http://127.0.0.1:9",
        oauth_scope="tracking_api:write",
    )
    assert client.track("u", "e").success and client.flush() is True


RESULTS_SCRIPT = Path(__file__).resolve().parent / "dropin_segment_results_script.py"


def _run_results_script(collector: Collector, env: dict, module: str) -> Dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(RESULTS_SCRIPT), collector.url, module],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_same_program_sees_the_same_returns_exceptions_and_full_queue(
    collector: Collector, child_env: dict, tmp_path: Path
) -> None:
    child_env["XDG_DATA_HOME"] = str(tmp_path / "data")
    ours = _run_results_script(collector, child_env, "durable_analytics")
    with Collector() as other:
        theirs = _run_results_script(other, child_env, "segment.analytics")
    assert ours == theirs
    assert ours["full queue"] == {"first": True, "second": False, "second event": "Overflow"}
    assert all(value.startswith("caught as") for value in ours["raises"].values())
    sent = {m.get("event") for m in collector.messages}
    assert {"Signed Up", "Module Event", "Float", "First"} <= sent and "Overflow" not in sent
