"""A failed batch waits alone; sustained failure or a 429 opens the file-wide breaker; takers do
not clear each other's breaker; clock steps neither stall delivery nor dead-letter early."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List

from durable_analytics import RetryPolicy
from durable_analytics.policy import BREAKER_AFTER, give_up_rule
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Response
from durable_analytics.transport import Transport
from durable_analytics.worker import Worker

T = 2_000_000_000.0
SLOW = RetryPolicy(initial=30.0, maximum=60.0, jitter=False)


def fill(store: MessageStore, count: int, now: float = T) -> List[int]:
    return [
        store.append(json.dumps({"type": "track", "userId": "u", "messageId": f"m{i}"}), now=now)
        for i in range(count)
    ]


def lease_all(store: MessageStore, now: float = T) -> Any:
    owner = store.new_owner()
    return store.lease(owner, max_messages=100, max_bytes=1 << 20, lease_seconds=30, now=now)


def poll(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


# ------------------------------------------------------------------------------------------------
# A failed batch waits alone


def test_a_transient_failure_holds_back_that_batch_only(make_client, collector) -> None:
    collector.respond_with(503)
    client = make_client(flush_at=5, max_batch_messages=5, max_in_flight=1, retry_policy=SLOW)
    first = [client.track("u", f"a{i}").message_id for i in range(5)]
    assert collector.wait_for_requests(1, timeout=10)
    later = [client.track("u", f"b{i}").message_id for i in range(5)]
    assert collector.wait_for(5, timeout=10)
    assert collector.message_ids == set(later)  # the next batch went at once
    assert not collector.message_ids & set(first)
    stats = client.stats()
    assert (stats.retrying, stats.breaker, stats.retry_at) == (5, "closed", None)


def test_sustained_failure_opens_the_breaker_for_every_batch(make_client, collector) -> None:
    collector.set_default(503)
    client = make_client(flush_at=1, max_batch_messages=1, max_in_flight=1, retry_policy=SLOW)
    for i in range(20):
        client.track("u", f"e{i}")
    assert poll(lambda: client.stats().breaker == "open")
    time.sleep(0.3)
    # BREAKER_AFTER failures in a row, each batch waiting alone; then nobody sends.
    assert len(collector.requests) == BREAKER_AFTER
    stats = client.stats()
    assert stats.failures_in_a_row == BREAKER_AFTER and stats.retry_at > time.time() + 20
    assert (stats.ready, stats.retrying) == (20, BREAKER_AFTER)


def test_429_slows_the_whole_file_and_lowers_concurrency(make_client, collector) -> None:
    collector.respond_with(Response(429, retry_after="30"))
    client = make_client(flush_at=1, max_in_flight=8)
    client.track("u", "e")
    assert poll(lambda: client.stats().breaker == "open")  # one 429 is enough
    worker = client._worker
    assert worker._slots == 4
    assert client.stats().retry_at >= time.time() + 0.5  # Retry-After 30, capped at 1 s here


def test_successes_raise_concurrency_again(queue_file: Path, collector: Collector) -> None:
    collector.respond_with(Response(429))
    store = MessageStore(queue_file)
    fill(store, 200)
    fast = RetryPolicy(initial=0.01, maximum=0.02, retry_after_max=0.05)
    worker = Worker(
        store, Transport("k", collector.url, timeout=5.0), policy=fast, max_batch_messages=5
    )
    assert worker.deliver_until(store.last_id(), timeout=20)
    assert worker._slots == worker.max_in_flight  # halved to 4, then one more per success


# ------------------------------------------------------------------------------------------------
# The breaker, in the file: shared, not cleared by another taker's older success


def test_an_older_success_does_not_close_the_breaker(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    fill(store, 3)
    lease = lease_all(store)
    a, b, c = lease.ids
    store.release(
        lease.owner, [a], error="503", wait_until=T + 10, retry_at=T + 10, sent_at=T, now=T
    )
    assert (store.backoff().retry_at, store.backoff().opened) == (T + 10, T)
    store.ack([b], sent_at=T - 1)  # sent before the breaker opened, by another taker
    assert store.backoff().retry_at == T + 10
    store.ack([c], sent_at=T + 11)  # sent after: the server is back
    state = store.backoff()
    assert (state.retry_at, state.failures, state.opened) == (0, 0, 0)


def test_one_probe_at_a_time_once_the_window_passed(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    other = MessageStore(queue_file)
    fill(store, 1)
    lease = lease_all(store)
    store._write(  # the breaker opened at T - 1 for one second
        lambda conn: conn.execute(
            "UPDATE state SET failures = ?, retry_at = ?, opened = ?", (BREAKER_AFTER, T, T - 1)
        )
    )
    assert store.claim_probe(T + 1, hold=30, after=BREAKER_AFTER) is True
    assert other.claim_probe(T + 1, hold=30, after=BREAKER_AFTER) is False
    assert store.backoff().retry_at == T + 31
    # The probe fails at once: the new window replaces the hold, it does not add to it.
    store.release(
        lease.owner,
        lease.ids,
        error="503",
        retry_at=T + 3,
        wait_until=T + 3,
        sent_at=T + 1,
        now=T + 1.2,
    )
    assert store.backoff().retry_at == T + 3


# ------------------------------------------------------------------------------------------------
# Clock steps


def test_a_backward_clock_step_does_not_stretch_a_batch_wait(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    fill(store, 2)
    lease = lease_all(store)
    store.release(lease.owner, lease.ids, error="503", retry_at=None, wait_until=T + 2, now=T)
    assert store.stats().retrying == 2
    back = T - 3600  # the clock steps back an hour
    assert store.reclaim(now=back) == 0
    assert store.reclaim(now=back + 1.0) == 0
    assert store.reclaim(now=back + 2.5) == 2  # 2 s after the step, not 3,602 s


def test_a_backward_clock_step_does_not_stretch_the_breaker(
    queue_file: Path, collector: Collector
) -> None:
    store = MessageStore(queue_file)
    fill(store, 1)
    lease = lease_all(store)
    store.release(
        lease.owner, lease.ids, error="503", wait_until=T + 2, retry_at=T + 2, sent_at=T, now=T
    )
    now = [T - 3600]
    worker = Worker(store, Transport("k", collector.url), policy=SLOW, clock=lambda: now[0])
    assert worker._blocked_for(now[0]) == 2.0  # not 3,602 s
    now[0] += 2.5
    assert worker._blocked_for(now[0]) == 0.0


def test_a_forward_clock_step_does_not_dead_letter_early(queue_file: Path) -> None:
    policy = RetryPolicy(max_retry_age=7 * 86_400)
    store = MessageStore(queue_file)
    fill(store, 1)
    lease = lease_all(store)
    store.release(lease.owner, lease.ids, error="503", retry_at=None, now=T)  # first try at T
    later = T + 8 * 86_400  # the clock jumps 8 days: the message was tried once
    lease = lease_all(store, now=later)
    before, attempts = give_up_rule(later, policy, longest_gap=policy.cap + 30)
    _, dead = store.release(
        lease.owner,
        lease.ids,
        error="503",
        retry_at=None,
        give_up_before=before,
        give_up_attempts=attempts,
        now=later,
    )
    assert dead == [] and store.stats().dead == 0
    # Retried as often as a week of failures takes, it is given up (kept as a dead letter).
    store._write(lambda conn: conn.execute("UPDATE messages SET attempts = ?", (attempts,)))
    lease = lease_all(store, now=later)
    _, dead = store.release(
        lease.owner,
        lease.ids,
        error="503",
        retry_at=None,
        give_up_before=before,
        give_up_attempts=attempts,
        now=later,
    )
    assert len(dead) == 1 and store.stats().dead == 1
