"""Options from ``DURABLE_ANALYTICS_*``: ``Client()`` with no arguments, the same precedence
everywhere (argument > environment > default), readable errors, a write key never shown, and
no ``.env`` file read behind the application's back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import durable_analytics
from durable_analytics import Client, ConfigError
from durable_analytics.cli import options as cli_options
from durable_analytics.config import Config
from durable_analytics.environment import ENV_PREFIX, VARIABLES, lookup
from durable_analytics.testing import Collector

KEY = "env-write-key-9f2c"
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _ in VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)


def test_client_with_no_arguments(
    monkeypatch: pytest.MonkeyPatch, collector: Collector, queue_file: Path
) -> None:
    monkeypatch.setenv("DURABLE_ANALYTICS_WRITE_KEY", KEY)
    monkeypatch.setenv("DURABLE_ANALYTICS_ENDPOINT", collector.url)
    monkeypatch.setenv("DURABLE_ANALYTICS_QUEUE", str(queue_file))
    monkeypatch.setenv("DURABLE_ANALYTICS_FLUSH_AT", "1")
    with Client() as client:
        assert client.queue_path == queue_file
        message_id = client.track("u", "From Env").message_id
        assert client.flush()
    (message,) = collector.messages
    assert message["messageId"] == message_id
    assert collector.requests[0].write_key == KEY


def test_module_api_with_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, collector: Collector, queue_file: Path
) -> None:
    monkeypatch.setenv("DURABLE_ANALYTICS_WRITE_KEY", KEY)
    monkeypatch.setenv("DURABLE_ANALYTICS_ENDPOINT", collector.url)
    monkeypatch.setenv("DURABLE_ANALYTICS_QUEUE", str(queue_file))
    try:
        durable_analytics.track("u", "Module From Env")
        assert durable_analytics.flush()
        assert durable_analytics.default_client.config.write_key == KEY
        monkeypatch.setenv("DURABLE_ANALYTICS_FLUSH_AT", "3")
        monkeypatch.setattr(durable_analytics, "flush_at", 7)  # a module setting wins
        durable_analytics.track("u", "Again")
        assert durable_analytics.default_client.config.flush_at == 7
    finally:
        durable_analytics.shutdown(timeout=0)
    assert [m["event"] for m in collector.messages][:1] == ["Module From Env"]


PRECEDENCE = [
    # option, variable value, explicit value, want with env only, want with both
    ("flush_at", "50", 7, 50, 7),
    ("flush_interval", "0.5", 2.0, 0.5, 2.0),
    ("durability", "full", "normal", "full", "normal"),
    ("gzip", "false", True, False, True),
    ("send", "0", True, False, True),
    ("timeout", "3,9", 4.0, (3.0, 9.0), 4.0),
    ("max_queue_bytes", "none", 10_000, None, 10_000),
    ("overflow", "raise", "drop_oldest", "raise", "drop_oldest"),
    ("endpoint", "http://127.0.0.1:9", "http://127.0.0.1:8", "http://127.0.0.1:9", None),
]


@pytest.mark.parametrize("option, raw, explicit, from_env, from_both", PRECEDENCE)
def test_precedence(
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    raw: str,
    explicit: Any,
    from_env: Any,
    from_both: Any,
) -> None:
    default = Config.from_options(write_key="k")
    monkeypatch.setenv(VARIABLES[option][0], raw)
    assert getattr(Config.from_options(write_key="k"), option) == from_env
    both = Config.from_options(write_key="k", **{option: explicit})
    assert getattr(both, option) == (explicit if from_both is None else from_both)
    monkeypatch.setenv(VARIABLES[option][0], "  ")  # empty counts as unset
    assert getattr(Config.from_options(write_key="k"), option) == getattr(default, option)


def test_segment_names_also_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_ANALYTICS_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("DURABLE_ANALYTICS_FLUSH_AT", "50")
    config = Config.from_options(write_key="k", host="http://127.0.0.1:8", upload_size=3)
    assert (config.endpoint, config.flush_at) == ("http://127.0.0.1:8", 3)


@pytest.mark.parametrize(
    "variable, raw, message",
    [
        ("DURABLE_ANALYTICS_FLUSH_AT", "many", "DURABLE_ANALYTICS_FLUSH_AT='many': use an integer"),
        ("DURABLE_ANALYTICS_FLUSH_AT", "0", "DURABLE_ANALYTICS_FLUSH_AT is not a valid flush_at"),
        ("DURABLE_ANALYTICS_GZIP", "maybe", "DURABLE_ANALYTICS_GZIP='maybe': use one of 1, true"),
        ("DURABLE_ANALYTICS_ENDPOINT", "ftp://x", "DURABLE_ANALYTICS_ENDPOINT is not a valid"),
        ("DURABLE_ANALYTICS_DURABILITY", "fast", "durability='fast': use one of"),
    ],
)
def test_a_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, message: str
) -> None:
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as info:
        Config.from_options(write_key="k")
    assert message in str(info.value)


def test_the_write_key_from_the_environment_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
    collector: Collector,
    queue_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DURABLE_ANALYTICS_WRITE_KEY", KEY)
    monkeypatch.setenv("DURABLE_ANALYTICS_ENDPOINT", collector.url)
    monkeypatch.setenv("DURABLE_ANALYTICS_QUEUE", str(queue_file))
    monkeypatch.setenv("DURABLE_ANALYTICS_DEBUG", "1")
    with caplog.at_level(logging.DEBUG, logger="durable_analytics"):
        client = Client()
        client.track("u", "E")
        assert client.flush()
        client.shutdown()
    assert client.config.debug is True
    assert "client ready" in caplog.text
    for shown in (caplog.text, repr(client), repr(client.config)):
        assert KEY not in shown
    monkeypatch.setenv("DURABLE_ANALYTICS_WRITE_KEY", "   ")
    with pytest.raises(ConfigError, match="DURABLE_ANALYTICS_WRITE_KEY") as info:
        Client()
    assert "write_key is required" in str(info.value)


def test_no_dot_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DURABLE_ANALYTICS_WRITE_KEY={KEY}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="write_key is required"):
        Client()
    assert lookup("write_key") is None


def test_the_command_line_reads_the_same_variables() -> None:
    assert VARIABLES["write_key"][0] == cli_options.ENV_WRITE_KEY
    assert VARIABLES["endpoint"][0] == cli_options.ENV_ENDPOINT
    assert VARIABLES["queue_path"][0] == cli_options.ENV_QUEUE
    assert all(variable.startswith(ENV_PREFIX) for variable, _ in VARIABLES.values())


def test_every_variable_is_documented() -> None:
    api = (DOCS / "api.md").read_text()
    missing = [variable for variable, _ in VARIABLES.values() if f"`{variable}`" not in api]
    assert missing == []
