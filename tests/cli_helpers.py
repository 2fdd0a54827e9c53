"""What the command's tests share: the write key, running ``python -m durable_analytics`` as
cron would, queue files filled or dead-lettered directly, and the ``env``/``keyed`` fixtures
(made available to every test module by conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from durable_analytics.messages import Encoder, Track
from durable_analytics.retry import RetryPolicy
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector
from durable_analytics.transport import Transport
from durable_analytics.worker import Worker

KEY = "cli-test-key"


@pytest.fixture
def env(child_env: Dict[str, str]) -> Dict[str, str]:
    """The child's environment, without settings leaking in from the developer's shell."""
    clean = {k: v for k, v in child_env.items() if not k.startswith("DURABLE_ANALYTICS_")}
    clean["NO_PROXY"] = clean["no_proxy"] = "127.0.0.1,localhost"
    return clean


@pytest.fixture
def keyed(env: Dict[str, str], collector: Collector, queue_file: Path) -> Dict[str, str]:
    """Settings given through the environment, as a cron job or a unit file would."""
    return {
        **env,
        "DURABLE_ANALYTICS_WRITE_KEY": KEY,
        "DURABLE_ANALYTICS_ENDPOINT": collector.url,
        "DURABLE_ANALYTICS_QUEUE": str(queue_file),
    }


def cli(*args: str, env: Dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m durable_analytics ARGS`` without a terminal, as cron would."""
    return subprocess.run(
        [sys.executable, "-m", "durable_analytics", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def fill(path: Path, count: int, event: str = "Filled") -> List[str]:
    """Append ``count`` valid track messages straight to the file, as an application would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = MessageStore.open(path)
    encoder = Encoder()
    ids = []
    try:
        for n in range(count):
            encoded = encoder.encode(Track(user_id=f"u{n}", event=event, properties={"n": n}))
            store.append(encoded.json, encoded.size)
            ids.append(encoded.message_id)
    finally:
        store.close()
    return ids


def deliver_in_process(path: Path, collector: Collector) -> None:
    """Deliver what the file holds with the library's own worker, to see what was stored."""
    store = MessageStore.open(path)
    transport = Transport(KEY, collector.url)
    try:
        worker = Worker(store, transport, policy=RetryPolicy(initial=0.01, maximum=0.05))
        assert worker.deliver_until(store.last_id(), timeout=5)
    finally:
        transport.close()
        store.close()


def stats(path: Path) -> Dict[str, Any]:
    store = MessageStore.open(path)
    try:
        return store.stats().as_dict()
    finally:
        store.close()


def kill_into_dead_letters(path: Path, count: int) -> None:
    """Dead-letter the first ``count`` messages as a 400 from the server would."""
    store = MessageStore.open(path)
    try:
        owner = store.new_owner()
        lease = store.lease(owner, max_messages=count, max_bytes=1 << 30, lease_seconds=30)
        assert lease is not None
        store.dead_letter(owner, lease.ids, http_status=400, reason="HTTP 400: bad field")
    finally:
        store.close()
