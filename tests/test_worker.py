"""The worker as the policy's executor, against the real collector: parallel uploads, stop
during a split and with uploads on the wire, lease extension, batch caps, the interval
trigger with an injected clock, and redirects."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, List

from durable_analytics import RetryPolicy
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Network, Response
from durable_analytics.transport import Transport
from durable_analytics.worker import DEFAULT_MAX_IN_FLIGHT, Worker

FAST = RetryPolicy(initial=0.01, maximum=0.05, retry_after_max=1.0)


def fill(store: MessageStore, count: int, prefix: str = "m", now: Any = None) -> List[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    for mid in ids:
        store.append(
            json.dumps({"type": "track", "userId": "u", "event": "e", "messageId": mid}), now=now
        )
    return ids


def worker_for(
    store: MessageStore, collector: Collector, timeout: float = 5.0, **options: Any
) -> Worker:
    settings = dict(policy=FAST, flush_at=1, flush_interval=0.05)
    settings.update(options)
    return Worker(store, Transport("k", collector.url, timeout=timeout), **settings)


# ------------------------------------------------------------------------------------------------
# Parallel uploads


def test_uploads_overlap_up_to_max_in_flight(queue_file: Path, collector: Collector) -> None:
    collector.set_default(Response(200, delay=0.5))
    store = MessageStore(queue_file)
    ids = fill(store, 40)
    worker = worker_for(store, collector, max_batch_messages=5, max_in_flight=4)
    assert worker.deliver_until(store.last_id(), timeout=20)
    assert collector.message_ids == set(ids)
    starts = sorted(r.received_at for r in collector.requests)
    # Four at once: the first four requests all arrived before the first answer could leave.
    assert starts[3] - starts[0] < 0.4, starts
    # Never a fifth: request i+4 can only start once one of the first answers left.
    assert all(later - earlier >= 0.45 for earlier, later in zip(starts, starts[4:])), starts


def test_max_in_flight_1_sends_one_batch_at_a_time(queue_file: Path, collector: Collector) -> None:
    collector.set_default(Response(200, delay=0.2))
    store = MessageStore(queue_file)
    fill(store, 12)
    worker = worker_for(store, collector, max_batch_messages=4, max_in_flight=1)
    assert worker.deliver_until(store.last_id(), timeout=20)
    starts = sorted(r.received_at for r in collector.requests)
    assert len(starts) == 3
    assert all(b - a >= 0.19 for a, b in zip(starts, starts[1:])), starts


def test_the_default_keeps_several_uploads_in_flight() -> None:
    assert DEFAULT_MAX_IN_FLIGHT >= 4


def test_a_client_delivers_in_parallel_in_the_background(make_client, collector) -> None:
    collector.set_default(Response(200, delay=0.3))
    client = make_client(flush_at=10, max_batch_messages=10, flush_interval=60.0)
    ids = [client.track("u", f"e{i}").message_id for i in range(60)]
    assert client.flush(timeout=20)
    assert collector.message_ids == set(ids)
    starts = sorted(r.received_at for r in collector.requests)
    assert starts[2] - starts[0] < 0.25, starts  # not one round trip per batch


# ------------------------------------------------------------------------------------------------
# Batch caps, whatever the configuration


def test_batches_never_exceed_2500_messages_or_500kb(
    queue_file: Path, collector: Collector
) -> None:
    store = MessageStore(queue_file)
    ids = fill(store, 6_000)  # ~70 bytes each: 6,000 fit one 500 KB body
    worker = worker_for(store, collector, max_batch_messages=10_000, max_batch_bytes=5_000_000)
    assert worker.deliver_until(store.last_id(), timeout=30)
    assert collector.message_ids == set(ids)
    assert max(len(r.payload["batch"]) for r in collector.requests) == 2_500
    assert max(r.body_bytes for r in collector.requests) <= 500_000


def test_flush_at_above_the_batch_size_still_delivers_everything(make_client, collector) -> None:
    # segment's upload_size=600 with our 500-message batches: no count of 600 ever waits.
    client = make_client(flush_at=600, max_batch_messages=500, flush_interval=60.0)
    ids = [client.track("u", f"e{i}").message_id for i in range(1_300)]
    deadline = time.monotonic() + 20

    def waiting() -> int:
        stats = client.stats()
        return stats.ready + stats.leased

    while waiting() >= 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Every full batch went out in the background; fewer than a batch wait for the interval.
    worker = client._worker
    why = (client.stats(), worker._appended, worker._wake_on_append, worker.in_flight)
    assert waiting() < 500, why
    assert len(collector.message_ids & set(ids)) > 800


# ------------------------------------------------------------------------------------------------
# The interval trigger, on an injected clock


def test_the_interval_trigger_fires_on_time(queue_file: Path, collector: Collector) -> None:
    store = MessageStore(queue_file)
    t0 = 2_000_000_000.0
    now = [t0]
    fill(store, 3, now=t0)
    worker = worker_for(store, collector, flush_at=50, flush_interval=5.0, clock=lambda: now[0])
    now[0] = t0 + 1.0
    assert worker.cycle() == (4.0, "waiting")
    now[0] = t0 + 4.9
    delay, reason = worker.cycle()
    assert reason == "waiting" and abs(delay - 0.1) < 1e-6
    assert collector.requests == []
    now[0] = t0 + 5.0
    assert worker.cycle() == (0.0, "sent")
    worker.settle(10)
    assert len(collector.message_ids) == 3


# ------------------------------------------------------------------------------------------------
# Stop: during a split, and with uploads on the wire


def test_stop_during_a_split_sends_nothing_more(queue_file: Path, collector: Collector) -> None:
    # Every request is refused (400) after 0.2 s: a 16-message batch is split down to single
    # messages, 31 requests in all, unless stop ends it.
    collector.set_default(Response(400, delay=0.2))
    store = MessageStore(queue_file)
    fill(store, 16)
    worker = worker_for(store, collector, max_batch_messages=16)
    worker.start()
    assert collector.wait_for_requests(3, timeout=10)
    started = time.monotonic()
    assert worker.stop(timeout=5) is True
    assert time.monotonic() - started < 2.0  # the request on the wire, nothing more
    seen = len(collector.requests)
    time.sleep(0.5)
    assert len(collector.requests) == seen <= 5
    stats = store.stats()
    assert stats.leased == 0  # the rest went back to the file, not left to expire
    assert stats.ready + stats.dead == 16


def test_stop_waits_for_the_upload_on_the_wire(queue_file: Path, collector: Collector) -> None:
    collector.set_default(Response(200, delay=0.8))
    store = MessageStore(queue_file)
    ids = fill(store, 30)
    worker = worker_for(store, collector, max_batch_messages=10, max_in_flight=3)
    worker.start()
    assert collector.wait_for_requests(3, timeout=10)
    assert worker.stop(timeout=0) is True
    # Every batch on the wire was answered and settled before stop returned.
    stats = store.stats()
    assert stats.leased == 0
    assert stats.delivered == len(collector.message_ids) == 30 - stats.ready
    assert collector.message_ids <= set(ids)


def test_shutdown_settles_the_batches_in_flight(make_client, collector) -> None:
    collector.set_default(Response(200, delay=0.8))
    client = make_client(flush_at=5, max_batch_messages=5, flush_interval=60.0)
    for i in range(10):
        client.track("u", f"e{i}")
    assert collector.wait_for_requests(2, timeout=10)
    client.shutdown(timeout=0)
    # Both requests on the wire were answered and settled before shutdown returned. (The
    # second batch may hold fewer than 5: after a full batch the worker leases at once, while
    # the calls may still be storing the rest; those stay queued.)
    stats = client.stats()
    assert stats.leased == 0
    assert 5 < stats.delivered == len(collector.message_ids) == 10 - stats.ready


# ------------------------------------------------------------------------------------------------
# The lease of a batch being split


def test_the_lease_is_extended_while_a_split_runs(queue_file: Path, collector: Collector) -> None:
    """A split of 8 messages takes 7 answers of 0.3 s, past a 1.6 s lease: without
    extension a second taker would lease the same messages and send them again."""
    collector.reject_marker = "POISON"
    collector.set_network(Network(delay=0.3))
    store = MessageStore(queue_file)
    fill(store, 7)
    store.append(json.dumps({"type": "track", "userId": "u", "event": "POISON", "messageId": "p"}))
    options: Any = dict(max_batch_messages=8, lease_seconds=1.6, timeout=0.6)
    first = worker_for(store, collector, **options)
    second = worker_for(MessageStore(queue_file), collector, **options)
    done = threading.Event()

    def other_taker() -> None:
        while not done.is_set():
            second.cycle(force=True)
            time.sleep(0.05)

    taker = threading.Thread(target=other_taker, daemon=True)
    first.cycle(force=True)  # leases all 8 and starts the split
    taker.start()
    try:
        assert first.settle(30)
    finally:
        done.set()
        taker.join(10)
        second.settle(10)
    assert collector.duplicates == 0
    assert second.totals.requests == 0  # the second taker never got the batch
    assert [json.loads(d.data)["messageId"] for d in store.dead_letters()] == ["p"]
    assert len(collector.message_ids) == 7


# ------------------------------------------------------------------------------------------------
# Redirects


def test_redirects_are_never_followed(make_client, collector: Collector, caplog) -> None:
    errors: List[Exception] = []
    target = f"{collector.url}/v1/batch"
    collector.respond_with(Response(307, headers={"Location": target}))
    client = make_client(on_error=lambda e, batch: errors.append(e))
    with caplog.at_level(logging.ERROR, logger="durable_analytics"):
        client.track("u", "e")
        assert client.flush(timeout=2) is False  # kept, sending paused: a configuration error
    assert len(collector.requests) == 1  # the redirect was not followed, even to a good URL
    assert collector.message_ids == set()
    assert client.stats().ready == 1
    assert errors == []  # kept, not given up: on_error hears only of dead letters
    logged = [r.getMessage() for r in caplog.records]
    assert any("redirect" in line and "endpoint" in line for line in logged)


def test_each_upload_in_flight_keeps_its_own_connection(make_client, caplog: Any) -> None:
    """More uploads than requests' default pool of 10: none opens and discards a connection."""
    with Collector(network=Network(delay=0.3)) as server:
        client = make_client(
            endpoint=server.url, flush_at=1, max_batch_messages=1, max_in_flight=14
        )
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            for i in range(28):
                client.track("u", f"e{i}")
            assert client.flush(timeout=20)
        assert server.network_peak > 10
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
