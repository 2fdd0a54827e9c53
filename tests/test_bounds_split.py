"""The shutdown bound holds in the middle of a split: a batch rejected as a whole is cut in
halves to find the bad messages, one request per half; a stop asked meanwhile ends it after
the request on the wire, not after the whole search."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import FAST_RETRY

from durable_analytics import Client
from durable_analytics.deadline import LEASE_MARGIN
from durable_analytics.testing import Collector, Network


def test_shutdown_mid_split_returns_within_its_bound(tmp_path: Path) -> None:
    with Collector(network=Network(delay=0.3)) as collector:
        collector.reject_marker = "poison"
        client = Client(
            "k",
            endpoint=collector.url,
            queue_path=tmp_path / "q.sqlite3",
            flush_at=256,
            max_batch_messages=256,
            timeout=1.0,
            retry_policy=FAST_RETRY,
            exit_timeout=0,
        )
        for index in range(256):  # four bad messages, spread out: about 40 requests to find
            client.track(f"u{index}", "poison" if index % 64 == 7 else "Fine")
        assert collector.wait_for_requests(2, timeout=10)  # the search has begun
        thread = client._worker._thread
        started = time.monotonic()
        client.shutdown(timeout=0.2)
        elapsed = time.monotonic() - started
        alive = thread.is_alive()
        requests = len(collector.requests)
        stats = client.stats()
    assert elapsed < 0.2 + 1.0 + LEASE_MARGIN + 2.0  # the whole search: over 10 s
    assert not alive and requests < 20  # stopped, not abandoned
    assert stats.leased == 0  # what was not searched yet is released, not left leased
