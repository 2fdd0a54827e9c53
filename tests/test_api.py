"""The Client end to end: every call as segment-analytics-python spells it, the JSON that
reaches a real collector, what is refused (and then never stored), and every option."""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from test_messages import OURS, WHEN, WHEN_WIRE, padded

from durable_analytics import (
    DEFAULT_ENDPOINT,
    Alias,
    Client,
    ConfigError,
    FieldTypeError,
    Group,
    Identify,
    MessageTooLarge,
    Page,
    RetryPolicy,
    Screen,
    Track,
    ValidationError,
)
from durable_analytics.testing import Collector

MakeClient = Callable[..., Client]

#: segment-analytics-python's parameter order, which positional callers depend on.
PARAMS = {
    "identify": [
        "user_id",
        "traits",
        "context",
        "timestamp",
        "anonymous_id",
        "integrations",
        "message_id",
    ],
    "track": [
        "user_id",
        "event",
        "properties",
        "context",
        "timestamp",
        "anonymous_id",
        "integrations",
        "message_id",
    ],
    "page": [
        "user_id",
        "category",
        "name",
        "properties",
        "context",
        "timestamp",
        "anonymous_id",
        "integrations",
        "message_id",
    ],
    "screen": [
        "user_id",
        "category",
        "name",
        "properties",
        "context",
        "timestamp",
        "anonymous_id",
        "integrations",
        "message_id",
    ],
    "group": [
        "user_id",
        "group_id",
        "traits",
        "context",
        "timestamp",
        "anonymous_id",
        "integrations",
        "message_id",
    ],
    "alias": ["previous_id", "user_id", "context", "timestamp", "integrations", "message_id"],
}

SELECTION = {"All": False, "Vero": True, "Google Analytics": False}
CONTEXT = {"ip": "10.1.2.3", "integrations": SELECTION}
INTEGRATIONS = {"Vero": False, "Amplitude": True}
#: What every call below must put on the wire besides its own fields.
COMMON_WIRE = {
    "context": {"ip": "10.1.2.3", "library": OURS},
    "integrations": {"All": False, "Vero": False, "Google Analytics": False, "Amplitude": True},
    "timestamp": WHEN_WIRE,
}

#: call -> (positional arguments but the message_id, the fields specific to its type)
CALLS: Dict[str, Tuple[Tuple[Any, ...], Dict[str, Any]]] = {
    "identify": (
        ("u1", {"email": "ann@example.com"}, CONTEXT, WHEN, "a1", INTEGRATIONS),
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a1",
            "traits": {"email": "ann@example.com"},
        },
    ),
    "track": (
        ("u1", "Order Completed", {"total": 9.5}, CONTEXT, WHEN, "a1", INTEGRATIONS),
        {
            "type": "track",
            "userId": "u1",
            "anonymousId": "a1",
            "event": "Order Completed",
            "properties": {"total": 9.5},
        },
    ),
    "page": (
        ("u1", "Docs", "API", {"path": "/api"}, CONTEXT, WHEN, "a1", INTEGRATIONS),
        {
            "type": "page",
            "userId": "u1",
            "anonymousId": "a1",
            "category": "Docs",
            "name": "API",
            "properties": {"path": "/api"},
        },
    ),
    "screen": (
        ("u1", "Home", "Feed", {"tab": 2}, CONTEXT, WHEN, "a1", INTEGRATIONS),
        {
            "type": "screen",
            "userId": "u1",
            "anonymousId": "a1",
            "category": "Home",
            "name": "Feed",
            "properties": {"tab": 2},
        },
    ),
    "group": (
        ("u1", "g1", {"seats": 3}, CONTEXT, WHEN, "a1", INTEGRATIONS),
        {
            "type": "group",
            "userId": "u1",
            "anonymousId": "a1",
            "groupId": "g1",
            "traits": {"seats": 3},
        },
    ),
    "alias": (
        ("old-id", "u1", CONTEXT, WHEN, INTEGRATIONS),
        {"type": "alias", "previousId": "old-id", "userId": "u1"},
    ),
}

TYPED = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
}


def received(collector: Collector) -> Dict[str, Dict[str, Any]]:
    return {m["messageId"]: m for m in collector.messages}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_signatures_match_segment_analytics_python(name: str) -> None:
    ours = list(inspect.signature(getattr(Client, name)).parameters)[1:]
    assert ours == PARAMS[name]
    assert all(
        p.default is None
        for p in list(inspect.signature(getattr(Client, name)).parameters.values())[1:]
    )
    try:
        from segment.analytics.client import Client as SegmentClient
    except ImportError:
        return
    assert ours == list(inspect.signature(getattr(SegmentClient, name)).parameters)[1:]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_call_positional_and_keyword(
    name: str, make_client: MakeClient, collector: Collector
) -> None:
    client = make_client(flush_interval=60)
    args, fields = CALLS[name]
    positional = getattr(client, name)(*args, f"{name}-pos").message_id
    keyword = getattr(client, name)(**dict(zip(PARAMS[name], (*args, f"{name}-kw")))).message_id
    assert (positional, keyword) == (f"{name}-pos", f"{name}-kw")
    assert client.flush() is True
    got = received(collector)
    assert got[positional] == {**fields, **COMMON_WIRE, "messageId": positional}
    assert got[keyword] == {**fields, **COMMON_WIRE, "messageId": keyword}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_typed_messages_with_enqueue(
    name: str, make_client: MakeClient, collector: Collector
) -> None:
    client = make_client(flush_interval=60)
    args, fields = CALLS[name]
    options = dict(zip(PARAMS[name], (*args, f"{name}-typed")))
    assert client.enqueue(TYPED[name](**options)).message_id == f"{name}-typed"
    assert client.flush() is True
    assert received(collector)[f"{name}-typed"] == {
        **fields,
        **COMMON_WIRE,
        "messageId": f"{name}-typed",
    }


def test_calls_fill_ids_and_time(make_client: MakeClient, collector: Collector) -> None:
    client = make_client()
    returned = [
        client.identify(42, {"a": 1}).message_id,
        client.track(anonymous_id=7, event="Clicked").message_id,
        client.page(user_id="u").message_id,
        client.screen(anonymous_id="a", name="Home").message_id,
        client.group(5, 6).message_id,
        client.alias(1, 2).message_id,
    ]
    assert client.flush() is True
    got = received(collector)
    assert set(returned) == set(got) and len(got) == 6
    assert all(uuid.UUID(message_id).version == 4 for message_id in returned)
    assert got[returned[0]]["userId"] == "42" and got[returned[1]]["anonymousId"] == "7"
    assert (got[returned[4]]["userId"], got[returned[4]]["groupId"]) == ("5", "6")
    assert (got[returned[5]]["previousId"], got[returned[5]]["userId"]) == ("1", "2")
    for message in got.values():
        assert message["context"] == {"library": OURS}
        assert message["integrations"] == {}
        assert message["timestamp"].endswith("+00:00") and message["timestamp"][19] == "."


BAD_CALLS = [
    (
        lambda c: c.identify(traits={"a": 1}),
        ValidationError,
        "identify: user_id or anonymous_id is required",
    ),
    (lambda c: c.track("u"), ValidationError, "event is required: pass a non-empty string"),
    (lambda c: c.track("u", ""), ValidationError, "event is required"),
    (
        lambda c: c.track(None, "e", anonymous_id=""),
        ValidationError,
        "track: user_id or anonymous_id is required",
    ),
    (
        lambda c: c.page(properties={"a": 1}),
        ValidationError,
        "page: user_id or anonymous_id is required",
    ),
    (lambda c: c.screen(), ValidationError, "screen: user_id or anonymous_id is required"),
    (lambda c: c.group("u"), ValidationError, "group_id is required"),
    (lambda c: c.alias(None, "u"), ValidationError, "previous_id is required"),
    (lambda c: c.alias("p"), ValidationError, "user_id is required"),
    (
        lambda c: c.track(True, "e"),
        FieldTypeError,
        "user_id: expected a string or a number, got bool",
    ),
    (
        lambda c: c.group("u", False),
        FieldTypeError,
        "group_id: expected a string or a number, got bool",
    ),
    (
        lambda c: c.identify("u", ["x"]),
        FieldTypeError,
        "traits: expected a dict (mapping), got list",
    ),
    (
        lambda c: c.track("u", "e", "props"),
        FieldTypeError,
        "properties: expected a dict (mapping), got str",
    ),
    (
        lambda c: c.track("u", "e", context=1),
        FieldTypeError,
        "context: expected a dict (mapping), got int",
    ),
    (
        lambda c: c.track("u", "e", integrations=[1]),
        FieldTypeError,
        "integrations: expected a dict (mapping), got list",
    ),
    (
        lambda c: c.track("u", "e", timestamp="soon"),
        ValidationError,
        "timestamp: 'soon' is not an ISO 8601 date-time",
    ),
    (
        lambda c: c.track("u", "e", {"x": float("nan")}),
        ValidationError,
        "properties.x: nan is not allowed in JSON",
    ),
    (
        lambda c: c.identify("u", {(1,): "a"}),
        FieldTypeError,
        "traits: key (1,) (tuple) cannot be a JSON object key",
    ),
    (
        lambda c: c.page("u", properties={"t": "\ud800"}),
        ValidationError,
        "properties.t: text contains a lone surrogate",
    ),
    (
        lambda c: c.enqueue({"type": "track"}),
        FieldTypeError,
        "expected an Identify, Track, Page, Screen, Group or Alias",
    ),
    (
        lambda c: c.enqueue(padded(32_001)),
        MessageTooLarge,
        "track message is 32,001 bytes, over the 32,000-byte limit",
    ),
]


@pytest.mark.parametrize(("call", "kind", "fragment"), BAD_CALLS)
def test_rejected_calls_store_nothing(
    call: Callable[[Client], Any],
    kind: type,
    fragment: str,
    make_client: MakeClient,
    collector: Collector,
) -> None:
    client = make_client()
    with pytest.raises(kind) as info:
        call(client)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert client.stats().ready == 0 and client.stats().queued_bytes == 0
    assert client.flush() is True
    assert collector.requests == []


def test_size_boundary_through_the_client(make_client: MakeClient, collector: Collector) -> None:
    client = make_client()
    assert client.enqueue(padded(32_000)).message_id == "m"
    with pytest.raises(MessageTooLarge) as info:
        client.enqueue(padded(32_001))
    assert (info.value.size, info.value.limit) == (32_001, 32_000)
    assert client.stats().ready + client.stats().delivered == 1
    assert client.flush() is True
    [message] = collector.messages
    assert len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()) == 32_000


def test_max_message_bytes_option(make_client: MakeClient) -> None:
    client = make_client(max_message_bytes=300)
    assert client.enqueue(padded(300)).message_id == "m"
    with pytest.raises(MessageTooLarge, match="over the 300-byte limit"):
        client.enqueue(padded(301))
    assert client.stats().ready + client.stats().delivered == 1


def test_default_context_through_the_client(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(default_context={"app": {"name": "shop", "version": "2"}, "locale": "en"})
    client.track(
        "u", "e", context={"locale": "de", "library": {"name": "impostor"}}, message_id="m1"
    )
    client.track("u", "e", message_id="m2")
    assert client.flush() is True
    got = received(collector)
    assert got["m1"]["context"] == {
        "app": {"name": "shop", "version": "2"},
        "locale": "de",
        "library": OURS,
    }
    assert got["m2"]["context"] == {
        "app": {"name": "shop", "version": "2"},
        "locale": "en",
        "library": OURS,
    }


def test_seed_integrations_selection_reaches_the_collector(
    make_client: MakeClient, collector: Collector
) -> None:
    client = make_client()
    context = {"integrations": {"All": False, "Vero": True, "Google Analytics": False}}
    snapshot = json.dumps(context)
    client.track("u", "e", context=context, message_id="m")
    assert client.flush() is True
    assert received(collector)["m"]["integrations"] == {
        "All": False,
        "Vero": True,
        "Google Analytics": False,
    }
    assert received(collector)["m"]["context"] == {"library": OURS}
    assert json.dumps(context) == snapshot


def test_drop_newest_returns_false_when_full(make_client: MakeClient) -> None:
    client = make_client(flush_interval=60, max_queue_size=1, overflow="drop_newest")
    assert client.track("u", "first", message_id="m1").success is True
    success, message = client.track("u", "second", message_id="m2")
    assert success is False and message["messageId"] == "m2"
    stats = client.stats()
    assert (stats.ready, stats.dropped) == (1, 1)


# --------------------------------------------------------------------------------------------
# Flush, join, shutdown, sync_mode


def test_flush_at_one_sends_every_message(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(flush_at=1, flush_interval=60)
    message_id = client.track("u", "e").message_id
    assert collector.wait_for(1, timeout=10)
    assert collector.message_ids == {message_id}


def test_default_flush_at_is_twenty(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(flush_at=None, flush_interval=60)
    assert client.flush_at == 20
    ids = [client.track("u", "e").message_id for _ in range(20)]
    assert collector.wait_for(20, timeout=10)
    assert [m["messageId"] for m in collector.batches[0]] == ids


def test_sync_mode_delivers_before_returning(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(sync_mode=True, flush_interval=60)
    message_id = client.track("u", "e").message_id
    assert collector.message_ids == {message_id}
    assert client.stats().ready == 0


def test_join_and_context_manager_deliver(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(flush_interval=60)
    first = client.track("u", "e").message_id
    assert client.join() is None
    assert collector.message_ids == {first}
    with client:
        second = client.track("u", "e").message_id
    assert collector.message_ids == {first, second}


def test_after_shutdown_calls_are_stored_not_sent(
    make_client: MakeClient, collector: Collector
) -> None:
    client = make_client(flush_interval=60)
    client.track("u", "before")
    assert client.shutdown() is True
    late = client.track("u", "after").message_id
    assert uuid.UUID(late).version == 4
    assert client.stats().ready == 1
    assert client.flush(timeout=0.1) is False
    assert [m["event"] for m in collector.messages] == ["before"]


def test_write_key_and_gzip_on_the_wire(
    make_client: MakeClient, collector: Collector, tmp_path: Path
) -> None:
    plain = make_client(write_key="key-1", gzip=False)
    plain.track("u", "e")
    assert plain.flush() is True
    zipped = make_client(write_key="key-2", queue_path=tmp_path / "other.sqlite3")
    zipped.track("u", "e")
    assert zipped.flush() is True
    assert [(r.write_key, r.gzip, r.status) for r in collector.requests] == [
        ("key-1", False, 200),
        ("key-2", True, 200),
    ]


# --------------------------------------------------------------------------------------------
# Configuration


def test_defaults() -> None:
    client = Client("k", send=False)
    assert client.endpoint == DEFAULT_ENDPOINT == "https://api.segment.io"
    assert (client.flush_at, client.flush_interval) == (20, 5.0)
    assert (client.max_batch_messages, client.max_batch_bytes) == (500, 500_000)
    assert client._encoder.max_message_bytes == 32_000
    assert (client.gzip, client.max_retries, client.timeout, client.verify) == (
        True,
        10,
        15.0,
        True,
    )
    assert (client.flush_timeout, client.exit_timeout, client.auth_pause) == (10.0, 3.0, 300.0)
    assert client.lease_seconds == 30.0  # the 15 s request deadline plus 15 s
    assert client.retry_policy == RetryPolicy()
    assert (client.send, client.sync_mode, client.debug, client.proxies) == (
        False,
        False,
        False,
        None,
    )


def test_host_is_an_alias_of_endpoint(collector: Collector, queue_file: Path) -> None:
    with Client("k", host=collector.url + "/", queue_path=queue_file, exit_timeout=0) as client:
        assert client.endpoint == collector.url
        client.track("u", "e", message_id="m")
    assert collector.message_ids == {"m"}
    same = Client("k", host=collector.url, endpoint=collector.url, send=False)
    assert same.endpoint == collector.url
    assert (
        Client("k", host="collector.example:8443", send=False).endpoint
        == "https://collector.example:8443"
    )


def test_segment_options_are_accepted(queue_file: Path, collector: Collector) -> None:
    errors: list = []
    client = Client(
        "k",
        host=collector.url,
        queue_path=queue_file,
        debug=False,
        send=True,
        on_error=lambda exc, batch: errors.append(exc),
        gzip=False,
        max_retries=3,
        sync_mode=False,
        timeout=(2, 7),
        proxies={},
        upload_size=7,
        upload_interval=0.25,
        max_queue_size=100,
        thread=1,
        log_handler=logging.NullHandler(),
        exit_timeout=0,
    )
    try:
        assert (client.flush_at, client.flush_interval, client.store.max_queue_messages) == (
            7,
            0.25,
            100,
        )
        assert (client.gzip, client.max_retries, client.timeout) == (False, 3, (2, 7))
        message_id = client.track("u", "e").message_id
        assert client.flush() is True
        assert collector.message_ids == {message_id}
        assert errors == []
    finally:
        client.shutdown(timeout=0)


def test_same_value_under_both_names_is_fine() -> None:
    client = Client("k", send=False, flush_at=5, upload_size=5, flush_interval=1, upload_interval=1)
    assert (client.flush_at, client.flush_interval) == (5, 1)


def test_thread_above_one_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="durable_analytics"):
        Client("k", send=False, thread=4)
    assert "thread=4: durable-analytics uses one delivery thread per process" in caplog.text


BAD_OPTIONS = [
    ({"write_key": None}, "write_key is required: Client('YOUR_WRITE_KEY')"),
    ({"write_key": ""}, "write_key is required"),
    ({"write_key": "   "}, "write_key is required"),
    ({"write_key": 123}, "write_key is required"),
    (
        {"host": "http://a.example", "endpoint": "http://b.example"},
        "endpoint= and host= name the same setting: pass only one",
    ),
    ({"host": "ftp://files.example"}, "endpoint='ftp://files.example' is not an http(s) URL"),
    ({"endpoint": "https://user:pw@api.example"}, "endpoint must not contain credentials"),
    ({"flush_at": 0}, "flush_at=0: use a positive integer"),
    ({"flush_at": 2.5}, "flush_at=2.5: use a positive integer"),
    ({"flush_at": True}, "flush_at=True: use a positive integer"),
    ({"upload_size": -1}, "flush_at=-1: use a positive integer"),
    ({"flush_at": 5, "upload_size": 6}, "flush_at= and upload_size= name the same setting"),
    ({"flush_interval": 0}, "flush_interval=0: use a positive number"),
    ({"upload_interval": "5"}, "flush_interval='5': use a positive number"),
    (
        {"flush_interval": 1, "upload_interval": 2},
        "flush_interval= and upload_interval= name the same setting",
    ),
    (
        {"max_queue_messages": 5, "max_queue_size": 6},
        "max_queue_messages= and max_queue_size= name the same setting",
    ),
    ({"max_queue_size": 0}, "max_queue_messages=0: use a positive integer, or None for no limit"),
    ({"max_queue_bytes": -5}, "max_queue_bytes=-5: use a positive integer, or None for no limit"),
    ({"max_retries": 0}, "max_retries=0: use a positive integer"),
    ({"timeout": 0}, "timeout=0: use a positive number"),
    ({"timeout": (1, -1)}, "timeout=-1: use a positive number"),
    ({"timeout": (1, 2, 3)}, "timeout=(1, 2, 3): use seconds, or a (connect, read) pair"),
    ({"thread": 0}, "thread=0: use a positive integer"),
    ({"durability": "fast"}, "durability='fast': use one of 'normal', 'full', 'buffered'"),
    ({"buffer_interval": 0}, "buffer_interval=0: use a positive number"),
    ({"durability": "buffered", "sync_mode": True}, "choose one"),
    ({"overflow": "block"}, "overflow='block': use one of"),
    ({"max_message_bytes": 600_000}, "max_message_bytes must not exceed max_batch_bytes"),
    ({"max_batch_messages": 0}, "max_batch_messages=0: use a positive integer"),
    ({"exit_timeout": -1}, "exit_timeout=-1: use a number of seconds >= 0"),
    ({"flush_timeout": 0}, "flush_timeout=0: use a positive number"),
    ({"on_error": "log"}, "on_error='log': use a function, or None"),
    ({"on_delivery": 1}, "on_delivery=1: use a function, or None"),
    ({"proxies": "http://proxy:3128"}, "proxies='http://proxy:3128': use a dict"),
    ({"default_context": ["app"]}, "default_context: expected a dict (mapping), got list"),
    ({"default_context": {"n": float("inf")}}, "default_context.n: inf is not allowed in JSON"),
    (
        {"retry_policy": RetryPolicy(), "max_retry_age": 60},
        "pass max_retry_age inside retry_policy=, not both",
    ),
]


@pytest.mark.parametrize(
    ("options", "fragment"), BAD_OPTIONS, ids=lambda v: ",".join(v) if isinstance(v, dict) else ""
)
def test_invalid_options_raise_config_error(
    options: Dict[str, Any], fragment: str, queue_file: Path
) -> None:
    options = {"write_key": "k", "queue_path": queue_file, **options}
    if "host" not in options:  # never the real default endpoint, should a case not fail
        options.setdefault("endpoint", "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as info:
        Client(options.pop("write_key"), **options)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_options_are_type_errors() -> None:
    """A name that is no option fails loudly instead of being ignored."""
    with pytest.raises(TypeError, match="flush_every"):
        Client("k", send=False, flush_every=3)


def test_send_false_validates_and_discards(tmp_path: Path, queue_file: Path) -> None:
    client = Client("k", send=False, queue_path=queue_file)
    message_id = client.track("u", "e", {"a": 1}).message_id
    assert uuid.UUID(message_id).version == 4
    with pytest.raises(ValidationError, match="event is required"):
        client.track("u")
    assert client.queue_path is None
    assert client.flush() is True and client.shutdown() is True
    assert not queue_file.exists() and not queue_file.parent.exists()
    with pytest.raises(ConfigError, match="send=False: this client has no queue"):
        client.stats()


# --------------------------------------------------------------------------------------------
# Logging


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    """The library's logger, restored afterwards so debug settings do not leak across tests."""
    logger = logging.getLogger("durable_analytics")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_debug_option_turns_on_debug_logging(
    package_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    package_logger.setLevel(logging.NOTSET)
    Client("k", send=False)
    assert package_logger.level == logging.NOTSET
    with caplog.at_level(logging.DEBUG):
        client = Client("k", send=False, debug=True)
        assert package_logger.level == logging.DEBUG
        message_id = client.track("u", "e").message_id
    assert f"send=False: validated and discarded {message_id}" in caplog.text


@pytest.mark.parametrize(
    ("value", "on"),
    [("analytics", True), ("urllib3,analytics", True), ("other", False), ("", False)],
)
def test_debug_environment_variable(
    value: str, on: bool, package_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    package_logger.setLevel(logging.NOTSET)
    monkeypatch.setenv("DEBUG", value)
    Client("k", send=False)
    assert package_logger.level == (logging.DEBUG if on else logging.NOTSET)
