"""The one configuration value: names, segment's aliases and positional order, defaults with
their reasons, checks whose messages say what to do."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict

import pytest

import durable_analytics as analytics
from durable_analytics import Client, Config, ConfigError
from durable_analytics.config import SEGMENT_POSITIONAL, option_names

SEGMENT_CLIENT = pytest.importorskip("segment.analytics.client").Client


def test_every_option_has_a_reason_and_a_check() -> None:
    for spec in dataclasses.fields(Config):
        assert spec.metadata["why"].strip(), spec.name
        assert callable(spec.metadata["check"]), spec.name


def test_every_segment_client_argument_is_an_option_in_segments_order() -> None:
    import inspect

    segment_names = tuple(inspect.signature(SEGMENT_CLIENT.__init__).parameters)[1:]
    assert segment_names == SEGMENT_POSITIONAL
    assert set(segment_names) <= set(option_names())


def test_every_segment_module_setting_exists_here() -> None:
    import types

    import segment.analytics as segment

    settings = {
        name
        for name, value in vars(segment).items()
        if not name.startswith("_")
        and not callable(value)
        and not isinstance(value, types.ModuleType)
        and name not in ("default_client", "VERSION")
    }
    assert "oauth_scope" in settings and "host" in settings
    missing = {name for name in settings if not hasattr(analytics, name)}
    assert not missing


def test_positional_arguments_follow_segments_order() -> None:
    config = Config.from_call(("k", "http://127.0.0.1:9", True, 7, False), {})
    assert (config.write_key, config.endpoint, config.debug) == ("k", "http://127.0.0.1:9", True)
    assert config.max_queue_messages == 7 and config.send is False
    client = Client("k", "http://127.0.0.1:9/", send=False)
    assert client.host == client.endpoint == "http://127.0.0.1:9"


def test_a_positional_and_a_keyword_for_one_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="multiple values for argument 'host'"):
        Client("k", "http://a.example", host="http://b.example", send=False)
    with pytest.raises(TypeError, match="at most 22 positional"):
        Client(*(["k"] + [None] * 22))


@pytest.mark.parametrize(
    ("segment_name", "ours", "value"),
    [
        ("host", "endpoint", "http://127.0.0.1:9"),
        ("upload_size", "flush_at", 7),
        ("upload_interval", "flush_interval", 0.25),
        ("max_queue_size", "max_queue_messages", 12),
        ("max_total_backoff_duration", "max_retry_age", 60),
    ],
)
def test_segment_names_set_our_options(segment_name: str, ours: str, value: Any) -> None:
    config = Config.from_options(write_key="k", **{segment_name: value})
    assert getattr(config, ours) == value


def test_max_total_backoff_duration_sets_the_retry_age() -> None:
    config = Config.from_options(write_key="k", max_total_backoff_duration=0)
    assert config.retry_policy.max_retry_age == 0


@pytest.mark.parametrize("name", ["max_total_backoff_duration", "max_rate_limit_duration"])
@pytest.mark.parametrize("value", [None, -1])
def test_segment_refuses_none_and_negative_durations_and_so_do_we(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=r"use a number of seconds >= 0"):
        Config.from_options(write_key="k", **{name: value})


@pytest.mark.parametrize("falsy", [False, 0, "", None])
def test_a_falsy_on_error_means_none_as_in_segment(falsy: Any) -> None:
    assert Config.from_options(write_key="k", on_error=falsy).on_error is None


@pytest.mark.parametrize(
    "options",
    [{}, {"write_key": None}, {"write_key": ""}, {"write_key": 5}],
)
def test_a_missing_write_key_is_also_an_assertion_error(options: Dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="write_key is required") as info:
        Client(**options)
    assert isinstance(info.value, ConfigError)


def test_invalid_options_are_also_value_errors_as_segment_raises() -> None:
    with pytest.raises(ValueError, match="flush_at=0: use a positive integer"):
        Config.from_options(write_key="k", flush_at=0)


def test_oauth_needs_its_three_settings_together() -> None:
    with pytest.raises(ConfigError, match="oauth_client_id, oauth_client_key and oauth_key_id"):
        Config.from_options(write_key="k", oauth_client_id="id")
    config = Config.from_options(
        write_key="k", oauth_client_id="id", oauth_client_key="pem", oauth_key_id="kid"
    )
    assert config.oauth and config.oauth_auth_server == "https://oauth2.segment.io"
    assert not Config.from_options(write_key="k").oauth


def test_derived_defaults_are_filled_in() -> None:
    config = Config.from_options(write_key="k", timeout=(5, 20))
    assert config.lease_seconds == 40
    assert Config.from_options(write_key="k").lease_seconds == 30
    with pytest.raises(ConfigError, match="lease_seconds=10 must be at least the request deadline"):
        Config.from_options(write_key="k", lease_seconds=10, timeout=20)


def test_repr_hides_secrets() -> None:
    text = repr(
        Config.from_options(
            write_key="secret-key", oauth_client_id="i", oauth_client_key="PEM", oauth_key_id="k"
        )
    )
    assert "secret-key" not in text and "PEM" not in text


def test_a_config_value_can_be_passed_whole(tmp_path: Path) -> None:
    config = Config.from_options(write_key="k", send=False, flush_at=3)
    client = Client(config=config)
    assert client.config is config and client.flush_at == 3
    with pytest.raises(ConfigError, match="either config= or options"):
        Client("k", config=config)


def test_module_settings_are_the_options_and_their_aliases() -> None:
    assert set(analytics.SETTINGS) == set(option_names())
    assert analytics.flush_at == 20 and analytics.upload_size is None


def test_max_queue_bytes_none_means_no_limit_as_documented(tmp_path: Path) -> None:
    """For every other option None means "the default" (segment's callers pass it so); for the
    queue's bounds it is a value, "no limit", as in the docs, the environment variable and
    MessageStore. The default file bound must not come back when a caller asks for none."""
    assert Config.from_options(write_key="k", max_queue_bytes=None).max_queue_bytes is None
    assert Config.from_options(write_key="k").max_queue_bytes == 1_000_000_000
    client = Client(
        "k", send=True, queue_path=tmp_path / "q.sqlite3", max_queue_bytes=None,
        flush_at=10**6, flush_interval=3600,
    )  # fmt: skip
    try:
        assert client.store.max_queue_bytes is None
        bounds = client.store.destination().bounds
        assert bounds is not None and bounds.bytes is None  # the file records no bound
    finally:
        client.shutdown(timeout=0)
