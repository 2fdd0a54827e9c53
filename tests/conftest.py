"""Shared fixtures: a real queue file in a temp dir, the real loopback collector, and clients
built with short timings so that no test waits out a production schedule."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from cli_helpers import env, keyed  # noqa: F401  (the command's fixtures, for every module)

from durable_analytics import Client, RetryPolicy
from durable_analytics.testing import Collector

FAST_RETRY = RetryPolicy(initial=0.01, maximum=0.05, retry_after_max=1.0)


def client_settings(collector: Collector, queue_file: Path, **options: Any) -> Dict[str, Any]:
    """Client options for tests: this collector and file, short timings, ``options`` on top."""
    settings: Dict[str, Any] = dict(
        endpoint=collector.url,
        queue_path=queue_file,
        flush_interval=0.05,
        retry_policy=FAST_RETRY,
        flush_timeout=5.0,
        exit_timeout=0.0,
    )
    settings.update(options)
    return settings


@pytest.fixture(autouse=True)
def _private_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default queue paths resolve under a temp dir, never the real user's data directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("DEBUG", raising=False)


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    return tmp_path / "queue" / "events.sqlite3"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as server:
        yield server


@pytest.fixture
def make_client(collector: Collector, queue_file: Path) -> Iterator[Callable[..., Client]]:
    """Build clients against the collector; every one is shut down after the test."""
    made: List[Client] = []

    def make(**options: Any) -> Client:
        settings = client_settings(collector, queue_file, **{"gzip": True, **options})
        client = Client(
            options.pop("write_key", "test-key"),
            **{k: v for k, v in settings.items() if k != "write_key"},
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=0)


def run_python(code: str, *args: str) -> List[str]:
    """argv for a child Python that runs ``code`` with this interpreter."""
    return [sys.executable, "-c", code, *args]


@pytest.fixture
def child_env(tmp_path: Path) -> dict:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = (
        str(Path(__file__).resolve().parent.parent) + os.pathsep + environ.get("PYTHONPATH", "")
    )
    return environ
