"""The delivery policy as tables: every status class, every decision, the backoff's exact
values, Retry-After as a floor, the schedule, and the bounds on what the file says."""

from __future__ import annotations

from typing import List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_analytics.policy import (
    BREAKER_AFTER,
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    Action,
    Kind,
    RetryPolicy,
    batch_limits,
    classify,
    decide,
    give_up_rule,
    next_concurrency,
    parse_retry_after,
    schedule,
    wait_left,
)

EXACT = RetryPolicy(initial=1.0, maximum=8.0, jitter=False, retry_after_max=30.0)
NOW = 1_000_000.0

# ------------------------------------------------------------------------------------------------
# What an answer means

STATUS_TABLE = [
    (None, Kind.TRANSIENT),  # network error, reset, timeout: no answer at all
    (200, Kind.ACCEPTED),
    (201, Kind.ACCEPTED),
    (204, Kind.ACCEPTED),
    (299, Kind.ACCEPTED),
    (100, Kind.TRANSIENT),
    (301, Kind.CONFIG),  # redirects are never followed: the endpoint is wrong
    (302, Kind.CONFIG),
    (307, Kind.CONFIG),
    (308, Kind.CONFIG),
    (400, Kind.SPLIT),
    (413, Kind.SPLIT),
    (401, Kind.CONFIG),
    (403, Kind.CONFIG),
    (404, Kind.CONFIG),  # a wrong path, or RudderStack's answer for a disabled source
    (405, Kind.CONFIG),
    (408, Kind.TRANSIENT),
    (410, Kind.TRANSIENT),
    (429, Kind.RATE_LIMITED),
    (460, Kind.TRANSIENT),
    (402, Kind.REJECTED),
    (409, Kind.REJECTED),
    (422, Kind.REJECTED),
    (451, Kind.REJECTED),
    (499, Kind.REJECTED),
    (500, Kind.TRANSIENT),
    (502, Kind.TRANSIENT),
    (503, Kind.TRANSIENT),
    (504, Kind.TRANSIENT),
    (599, Kind.TRANSIENT),
    (501, Kind.CONFIG),  # not implemented here: retrying cannot help, dropping is wrong
    (505, Kind.CONFIG),
]


@pytest.mark.parametrize("status, kind", STATUS_TABLE)
def test_every_status_class_has_one_meaning(status: Optional[int], kind: Kind) -> None:
    assert classify(status) is kind


def _decide(kind: Kind, **overrides: object):
    args = dict(
        messages=10,
        batch_failures=0,
        file_failures=0,
        retry_after=None,
        now=NOW,
        policy=EXACT,
        pause=300.0,
    )
    args.update(overrides)
    return decide(kind, **args)  # type: ignore[arg-type]


# (kind, overrides) -> (action, retry in, breaker in, pause)
DECISION_TABLE = [
    (Kind.ACCEPTED, {}, (Action.ACK, None, None, 0.0)),
    (Kind.SPLIT, {"messages": 2}, (Action.SPLIT, None, None, 0.0)),
    (Kind.SPLIT, {"messages": 1}, (Action.DEAD_LETTER, None, None, 0.0)),
    (Kind.REJECTED, {"messages": 10}, (Action.DEAD_LETTER, None, None, 0.0)),
    (Kind.CONFIG, {}, (Action.PAUSE, None, None, 300.0)),
    (Kind.CONFIG, {"file_failures": 50}, (Action.PAUSE, None, None, 300.0)),
    # A transient failure backs off this batch alone, by its own failures.
    (Kind.TRANSIENT, {}, (Action.RETRY, 1.0, None, 0.0)),
    (Kind.TRANSIENT, {"batch_failures": 2}, (Action.RETRY, 4.0, None, 0.0)),
    (Kind.TRANSIENT, {"batch_failures": 9}, (Action.RETRY, 8.0, None, 0.0)),
    (Kind.TRANSIENT, {"file_failures": BREAKER_AFTER - 2}, (Action.RETRY, 1.0, None, 0.0)),
    # The BREAKER_AFTER-th failure in a row across the file opens the breaker, growing after.
    (Kind.TRANSIENT, {"file_failures": BREAKER_AFTER - 1}, (Action.RETRY, 1.0, 1.0, 0.0)),
    (Kind.TRANSIENT, {"file_failures": BREAKER_AFTER + 1}, (Action.RETRY, 4.0, 4.0, 0.0)),
    (Kind.TRANSIENT, {"file_failures": 100}, (Action.RETRY, 8.0, 8.0, 0.0)),
    # Retry-After is a floor over the backoff, for the batch and for the breaker.
    (Kind.TRANSIENT, {"retry_after": 5.0}, (Action.RETRY, 5.0, None, 0.0)),
    (Kind.TRANSIENT, {"retry_after": 0.0, "batch_failures": 3}, (Action.RETRY, 8.0, None, 0.0)),
    # 429 slows the whole file at once, whatever the run.
    (Kind.RATE_LIMITED, {}, (Action.RETRY, 1.0, 1.0, 0.0)),
    (Kind.RATE_LIMITED, {"retry_after": 20.0}, (Action.RETRY, 20.0, 20.0, 0.0)),
    (Kind.RATE_LIMITED, {"retry_after": 3600.0}, (Action.RETRY, 30.0, 30.0, 0.0)),
    (Kind.RATE_LIMITED, {"file_failures": 2}, (Action.RETRY, 4.0, 4.0, 0.0)),
]


@pytest.mark.parametrize("kind, overrides, expected", DECISION_TABLE)
def test_decision_table(kind: Kind, overrides: dict, expected: tuple) -> None:
    decision = _decide(kind, **overrides)
    action, retry_in, breaker_in, pause = expected
    assert decision.action is action
    assert decision.retry_at == (None if retry_in is None else NOW + retry_in)
    assert decision.breaker_until == (None if breaker_in is None else NOW + breaker_in)
    assert decision.pause == pause
    assert decision.count_failure is (action is Action.RETRY)


def test_a_batch_never_retries_before_the_breaker_it_opened() -> None:
    jittered = RetryPolicy(initial=1.0, maximum=60.0)
    for run in range(BREAKER_AFTER, BREAKER_AFTER + 8):
        decision = _decide(Kind.TRANSIENT, file_failures=run, policy=jittered)
        assert decision.breaker_until is not None
        assert decision.retry_at >= decision.breaker_until


# ------------------------------------------------------------------------------------------------
# How long to wait


def test_backoff_exact_values_with_jitter_off() -> None:
    policy = RetryPolicy(initial=0.5, maximum=4.0, jitter=False)
    assert [policy.backoff(n) for n in range(0, 8)] == [0.5, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_backoff_with_full_jitter_draws_within_the_window() -> None:
    policy = RetryPolicy(initial=0.5, maximum=4.0)
    for failures, window in [(1, 0.5), (3, 2.0), (10, 4.0)]:
        draws = [policy.backoff(failures) for _ in range(300)]
        assert all(0 <= d <= window for d in draws)
        assert max(draws) > 0.7 * window and min(draws) < 0.3 * window


@pytest.mark.parametrize(
    "retry_after, failures, expected",
    [
        (None, 3, 4.0),  # no header: the backoff
        (0.0, 3, 4.0),  # Retry-After: 0 does not switch the backoff off
        (-5.0, 3, 4.0),  # nor does a negative value
        (2.0, 3, 4.0),  # a floor below the backoff changes nothing
        (6.0, 3, 6.0),  # above it, the server's value
        (25.0, 1, 25.0),
        (3600.0, 1, 30.0),  # clamped to retry_after_max
    ],
)
def test_retry_after_is_a_floor_within_the_cap(
    retry_after: Optional[float], failures: int, expected: float
) -> None:
    assert EXACT.backoff(failures, retry_after) == expected


def test_a_past_retry_after_date_keeps_the_backoff() -> None:
    now = 1_700_000_000.0
    past = parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now)
    assert past == 0.0
    assert EXACT.backoff(4, past) == 8.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == pytest.approx(20.0)
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("nan") is None
    assert parse_retry_after("soon") is None


def test_the_cap_is_the_longest_wait_the_policy_asks() -> None:
    assert EXACT.cap == 30.0
    assert RetryPolicy(maximum=600.0, retry_after_max=60.0).cap == 600.0
    jittered = RetryPolicy()
    assert all(jittered.backoff(n, 10_000) <= jittered.cap for n in range(1, 40))


@pytest.mark.parametrize(
    "until, since, now, expected",
    [
        (NOW + 2, NOW, NOW, 2.0),
        (NOW + 2, NOW, NOW + 1, 1.0),
        (NOW + 2, NOW, NOW + 5, 0.0),
        # The clock stepped back an hour: still 2 s, not 3,602 s.
        (NOW + 2, NOW, NOW - 3600, 2.0),
        # Written by a build with a longer cap, or a corrupt value: never past this cap.
        (NOW + 10_000, NOW - 10, NOW, 30.0),
        (0.0, 0.0, NOW, 0.0),
    ],
)
def test_waits_read_from_the_file_are_bounded(
    until: float, since: float, now: float, expected: float
) -> None:
    assert wait_left(until, since, now, cap=30.0) == expected


def test_give_up_needs_both_the_age_and_the_attempts() -> None:
    policy = RetryPolicy(max_retry_age=3600.0)
    before, attempts = give_up_rule(NOW, policy, longest_gap=100.0)
    assert before == NOW - 3600.0
    # A clock step forwards of a day makes every message "old", but one tried 3 times has
    # not been retried for an hour: it takes 36 attempts of at most 100 s each.
    assert attempts == 36
    assert give_up_rule(NOW, RetryPolicy(max_retry_age=1.0), longest_gap=100.0)[1] == 1


def test_batch_limits_hold_whatever_the_configuration() -> None:
    assert batch_limits(500, 500_000) == (500, 500_000)
    assert batch_limits(10_000, 5_000_000) == (MAX_BATCH_MESSAGES, MAX_BATCH_BYTES)
    assert batch_limits(2_500, 499_999) == (2_500, 499_999)
    assert batch_limits(0, 0) == (1, 1)


@pytest.mark.parametrize(
    "current, kind, expected",
    [
        (8, Kind.RATE_LIMITED, 4),
        (1, Kind.RATE_LIMITED, 1),
        (4, Kind.ACCEPTED, 5),
        (8, Kind.ACCEPTED, 8),
        (4, Kind.TRANSIENT, 4),
        (12, Kind.TRANSIENT, 8),
    ],
)
def test_concurrency_halves_on_429_and_grows_back_on_success(
    current: int, kind: Kind, expected: int
) -> None:
    assert next_concurrency(current, kind, maximum=8) == expected


# ------------------------------------------------------------------------------------------------
# When to send


def _plan(**overrides: object):
    args = dict(
        now=NOW,
        ready=5,
        oldest=NOW - 1.0,
        flush_at=20,
        flush_interval=5.0,
        batch_messages=500,
        linger=0.05,
        last_send=0.0,
        force=False,
        blocked_for=0.0,
        in_flight=0,
        slots=4,
        next_expiry=None,
    )
    args.update(overrides)
    plan = schedule(**args)  # type: ignore[arg-type]
    return plan.wait, plan.reason


SCHEDULE_TABLE = [
    ({}, (4.0, "waiting")),  # 5 of 20, 1 s old: the interval ends in 4 s, exactly
    ({"oldest": NOW - 4.99}, (pytest.approx(0.01), "waiting")),
    ({"oldest": NOW - 5.0}, (0.0, "send")),  # the interval trigger fires on time
    ({"ready": 20}, (0.0, "send")),  # flush_at reached
    ({"force": True}, (0.0, "send")),
    ({"ready": 0, "oldest": None}, (5.0, "idle")),
    ({"ready": 0, "oldest": None, "next_expiry": NOW + 2}, (2.0, "idle")),
    ({"ready": 0, "oldest": None, "next_expiry": NOW - 1}, (0.0, "reclaim")),
    ({"ready": 0, "oldest": None, "next_expiry": NOW + 60}, (5.0, "idle")),
    ({"blocked_for": 3.0, "force": True}, (3.0, "backoff")),
    ({"in_flight": 4, "force": True}, (5.0, "busy")),
    ({"in_flight": 3, "ready": 20}, (0.0, "send")),
    # flush_at above the batch size: a full batch is due, it never waits for 600 of 500.
    ({"flush_at": 600, "ready": 500, "oldest": None}, (0.0, "send")),
    # Under a steady stream a partial batch lingers after the last send; a full one does not.
    ({"ready": 20, "last_send": NOW - 0.01}, (pytest.approx(0.04), "linger")),
    ({"ready": 500, "last_send": NOW - 0.01}, (0.0, "send")),
    ({"force": True, "last_send": NOW - 0.01}, (0.0, "send")),
    # The clock stepped back: a message from "the future" is due now, not in an hour.
    ({"oldest": NOW + 3600}, (0.0, "send")),
]


@pytest.mark.parametrize("overrides, expected", SCHEDULE_TABLE)
def test_schedule_table(overrides: dict, expected: tuple) -> None:
    assert _plan(**overrides) == expected


@settings(max_examples=150, deadline=None)
@given(
    flush_at=st.integers(1, 3000),
    batch_messages=st.integers(1, 3000),
    flush_interval=st.floats(0.01, 30.0),
    linger=st.floats(0.0, 1.0),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=400),
    burst=st.integers(1, 2000),
)
def test_any_configuration_delivers_everything(
    flush_at: int,
    batch_messages: int,
    flush_interval: float,
    linger: float,
    gaps: List[float],
    burst: int,
) -> None:
    """A model of the worker: messages arrive (a burst, then one per gap), the worker sleeps
    what the schedule says (never woken early by an append) and sends up to a batch. Every
    message is sent within two intervals (plus linger) of its arrival, and the schedule never
    asks to wait zero seconds without sending."""
    arrivals = [0.0] * burst
    moment = 0.0
    for gap in gaps:
        moment += gap
        arrivals.append(moment)
    limit, _ = batch_limits(batch_messages, MAX_BATCH_BYTES)
    now, last_send, next_arrival = 0.0, -1e9, 0
    pending: List[float] = []
    worst = 0.0
    full = False  # the worker's shortcut: after a full batch it leases again without counting
    bound = 2 * flush_interval + linger + 0.01
    for _ in range(50_000):
        while next_arrival < len(arrivals) and arrivals[next_arrival] <= now:
            pending.append(arrivals[next_arrival])
            next_arrival += 1
        assert not pending or now - pending[0] <= bound, "a message waits past its interval"
        plan = schedule(
            now=now,
            ready=limit if full else min(len(pending), limit),
            oldest=None if full else (pending[0] if pending else None),
            flush_at=flush_at,
            flush_interval=flush_interval,
            batch_messages=limit,
            linger=linger,
            last_send=last_send,
            force=False,
            blocked_for=0.0,
            in_flight=0,
            slots=1,
            next_expiry=None,
        )
        if plan.reason == "send":
            if pending:
                worst = max(worst, now - pending[0])
            full = len(pending) >= limit
            del pending[:limit]
            last_send = now
            continue
        assert plan.wait > 0, plan
        if not pending and next_arrival == len(arrivals):
            break
        now += plan.wait
    assert not pending and next_arrival == len(arrivals)
    assert worst <= bound
