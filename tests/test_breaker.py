"""A failed batch waits alone; sustained failure or a 429 opens the file-wide breaker; takers do
not clear each other's breaker; clock steps neither stall delivery nor dead-letter early."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import pytest

from durable_analytics import RetryPolicy
from durable_analytics.policy import BREAKER_AFTER, give_up_rule
from durable_analytics.store import MessageStore
from durable_analytics.store.records import Backoff
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


def open_breaker(store: MessageStore) -> None:
    """The breaker opened at T - 1 for one second, after BREAKER_AFTER failures in a row."""
    store._write(
        lambda conn: conn.execute(
            "UPDATE state SET failures = ?, retry_at = ?, opened = ?", (BREAKER_AFTER, T, T - 1)
        )
    )


def fail(
    store: MessageStore, owner: str, ids: List[int], sent_at: float, now: float, until: float
) -> None:
    """A 503 for the request sent at ``sent_at``, answered at ``now``: wait, breaker, until."""
    store.release(
        owner, ids, error="503", retry_at=until, wait_until=until, sent_at=sent_at, now=now
    )


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
    open_breaker(store)
    assert store.claim_probe(T + 1, hold=30, after=BREAKER_AFTER) is True
    assert other.claim_probe(T + 1, hold=30, after=BREAKER_AFTER) is False
    assert store.backoff().retry_at == T + 31
    # The probe fails at once: the new window replaces the hold, it does not add to it.
    fail(store, lease.owner, list(lease.ids), sent_at=T + 1, now=T + 1.2, until=T + 3)
    assert store.backoff().retry_at == T + 3


@pytest.mark.parametrize("probe_answer", ["failure", "success"])
def test_an_older_failure_answered_during_the_probe_leaves_the_probe_its_answer(
    queue_file: Path, probe_answer: str
) -> None:
    """A request sent before the breaker's probe and failing while the probe is on the wire
    only extends the window: the probe's own answer then still replaces its hold with the
    policy's backoff, or closes the breaker. No hold outlives the probe's answer."""
    store = MessageStore(queue_file)
    fill(store, 2)
    lease = lease_all(store)
    older, probe = lease.ids
    open_breaker(store)
    assert store.claim_probe(T + 1, hold=30, after=BREAKER_AFTER) is True
    # Sent at T - 2, before the breaker opened, answered 503 just after the probe went out.
    fail(store, lease.owner, [older], sent_at=T - 2, now=T + 1.2, until=T + 3)
    assert store.backoff().retry_at == T + 31  # still the probe's hold, only extended
    if probe_answer == "failure":  # the probe, sent at T + 1.1, fails at T + 1.5
        fail(store, lease.owner, [probe], sent_at=T + 1.1, now=T + 1.5, until=T + 5)
        state = store.backoff()
        assert (state.retry_at, state.opened) == (T + 5, T + 1.5)
    else:
        store.ack([probe], sent_at=T + 1.1)
        state = store.backoff()
        assert (state.retry_at, state.failures, state.opened) == (0, 0, 0)


def test_a_probe_never_answered_lets_the_next_one_go_when_its_hold_ends(queue_file: Path) -> None:
    store = MessageStore(queue_file)
    other = MessageStore(queue_file)
    open_breaker(store)
    assert store.claim_probe(T, hold=30, after=BREAKER_AFTER) is True  # then its taker dies
    assert other.claim_probe(T + 29.9, hold=30, after=BREAKER_AFTER) is False
    assert other.claim_probe(T + 30, hold=30, after=BREAKER_AFTER) is True


class _StepsAroundBreakerRead(MessageStore):
    """Runs ``before`` and ``after`` once, around the next read of the breaker: what other
    threads do between two reads of a flush, in an order the thread scheduler produces only
    now and then."""

    before: Optional[Callable[[], Any]] = None
    after: Optional[Callable[[], Any]] = None

    def breaker(self, now: float) -> Backoff:
        before, after, self.before, self.after = self.before, self.after, None, None
        if before is not None:
            before()
        state = super().breaker(now)
        if after is not None:
            after()
        return state


@pytest.mark.parametrize("answered", [False, True], ids=["on-the-wire", "answered"])
def test_a_flush_does_not_read_its_own_probes_hold_as_hopeless(
    queue_file: Path, collector: Collector, answered: bool
) -> None:
    """flush() gives up early only when the breaker ends after its deadline with nothing of
    this process in flight. The probe's upload is counted before it claims the hold, so a flush
    that saw no upload and then read the hold claimed meanwhile must look again, even when the
    probe was answered (its hold replaced) before its second look."""
    collector.respond_with(Response(503, delay=0.5))
    store = _StepsAroundBreakerRead(queue_file)
    fill(store, 1)
    open_breaker(store)
    policy = RetryPolicy(initial=2.0, maximum=60.0, jitter=False)
    worker = Worker(store, Transport("k", collector.url), policy=policy, clock=lambda: T)
    sent: List[Tuple[float, str]] = []
    store.before = lambda: sent.append(worker.cycle(force=True))  # the probe goes out
    if answered:
        store.after = lambda: worker.settle(10.0)
    assert worker._hopeless(remaining=10.0) is False
    assert sent == [(0.0, "sent")]
    assert worker.settle(10.0)
    # The probe's 503 replaced its hold with the policy's next window (2 s doubled): a flush
    # with more time left waits for it, one with less gives up.
    assert store.backoff().retry_at == T + 4.0
    assert worker._hopeless(remaining=10.0) is False
    assert worker._hopeless(remaining=3.0) is True


@pytest.mark.parametrize("status", [400, 401])
def test_a_probe_answered_neither_way_ends_its_hold(
    queue_file: Path, collector: Collector, status: int
) -> None:
    """A probe the server rejects (400: dead-lettered) or refuses for its configuration (401:
    this process pauses) was answered, yet neither failed nor succeeded: its hold ends, the
    breaker stays half-open and the next taker probes at once, not a lease later."""
    collector.respond_with(status)
    store = MessageStore(queue_file)
    fill(store, 1)
    open_breaker(store)
    worker = Worker(store, Transport("k", collector.url), policy=SLOW, clock=lambda: T)
    assert worker.cycle(force=True) == (0.0, "sent")
    assert worker.settle(10.0) and len(collector.requests) == 1
    state = store.backoff()
    assert state.retry_at <= T and state.failures == BREAKER_AFTER
    if status == 400:  # nothing else holds this process back: a flush waits
        assert worker._hopeless(remaining=10.0) is False
    assert MessageStore(queue_file).claim_probe(T, hold=30, after=BREAKER_AFTER) is True


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
