"""Delivery policy: what an answer means, how long to wait, and when to send.

Every decision the worker makes is a pure function here, over explicit inputs (the answer,
the failures so far, the time), so that each can be read in one place and tested as a table.
The worker only executes: it leases, sends, and applies the :class:`Decision` it is given.

- :func:`classify` maps an HTTP status (or a network error) to a :class:`Kind`.
- :func:`decide` turns that answer into a :class:`Decision`: ack, split, dead-letter, retry
  this batch at a given time (and maybe open the file-wide breaker), or pause this process.
- :class:`RetryPolicy` computes waits: exponential backoff with full jitter, capped, with a
  server's ``Retry-After`` as a floor, never as a way around the backoff.
- :func:`schedule` says when the next batch goes out (``flush_at``, ``flush_interval``, linger,
  force, the breaker, free upload slots).
- :func:`batch_limits` and :func:`wait_left` bound what the configuration and the file say.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import enum
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

from .limits import MAX_BATCH_MESSAGES
from .limits import MAX_REQUEST_BYTES as MAX_BATCH_BYTES

if TYPE_CHECKING:  # imported on first use: `import durable_analytics` stays light
    import tenacity

__all__ = [
    "Kind",
    "Action",
    "Decision",
    "Plan",
    "RetryPolicy",
    "DEFAULT_RETRY_POLICY",
    "BREAKER_AFTER",
    "DEFAULT_MAX_IN_FLIGHT",
    "MAX_BATCH_MESSAGES",
    "MAX_BATCH_BYTES",
    "classify",
    "decide",
    "schedule",
    "batch_limits",
    "wait_left",
    "give_up_rule",
    "next_concurrency",
    "parse_retry_after",
]

SECONDS_PER_DAY = 86_400.0
BREAKER_AFTER = 5  # failures in a row, across the whole file, that open the breaker
DEFAULT_MAX_IN_FLIGHT = 8  # batches on the wire at once, per process
_MIN_WAIT = 0.001  # a wait computed to a few ulps above zero must not spin the worker


class Kind(enum.Enum):
    """What an answer means, by the wire contract's response table."""

    ACCEPTED = "accepted"  # 2xx: acknowledge every message
    TRANSIENT = "transient"  # 408, 410, 460, 5xx, network errors, timeouts: retry later
    RATE_LIMITED = "rate-limited"  # 429: retry later, and slow the whole file down
    SPLIT = "split"  # 400, 413: split the batch to find the rejected messages
    CONFIG = "config"  # 3xx, 401/403, 404/405, 501/505: keep everything, pause, report
    REJECTED = "rejected"  # any other 4xx: dead-letter the batch


# Statuses that say the endpoint or the write key is wrong: no batch can succeed until a person
# fixes the configuration, and dropping data for a configuration error is never right. 501 and
# 505 (the server does not implement this request) are not retried by segment-analytics-python;
# here they keep the data and pause like the others.
_CONFIG_STATUSES = frozenset({401, 403, 404, 405, 501, 505})
# 410 and 460 are retried as segment-analytics-python does (460: a load balancer saw the
# client close the connection; 410: some gateways answer it while a source is being moved).
_TRANSIENT_4XX = frozenset({408, 410, 460})


def classify(status: Optional[int]) -> Kind:
    """The meaning of one answer; ``None`` stands for no answer (network error, timeout)."""
    if status is None:
        return Kind.TRANSIENT
    if 200 <= status < 300:
        return Kind.ACCEPTED
    if 300 <= status < 400 or status in _CONFIG_STATUSES:
        return Kind.CONFIG  # a redirect is never followed: the endpoint setting is wrong
    if status == 429:
        return Kind.RATE_LIMITED
    if status in (400, 413):
        return Kind.SPLIT
    if status in _TRANSIENT_4XX or status >= 500 or status < 200:
        return Kind.TRANSIENT
    return Kind.REJECTED


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` for a missing or unreadable header; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait after failed uploads, and for how long to try.

    - ``initial``: the first backoff window, in seconds; it doubles with each failure in a row.
    - ``maximum``: the cap of that window.
    - ``jitter``: full jitter (a uniform draw in the window) so that many processes recovering
      from one outage do not return in step; ``False`` waits the whole window.
    - ``retry_after_max``: the longest ``Retry-After`` obeyed; longer values are clamped.
    - ``max_retry_age``: how long a message is retried after its first attempt before it is
      dead-lettered (kept on disk, never dropped).
    """

    initial: float = 1.0
    maximum: float = 60.0
    jitter: bool = True
    retry_after_max: float = 300.0
    max_retry_age: float = 7 * SECONDS_PER_DAY

    def __post_init__(self) -> None:
        from .errors import ConfigError

        for name in ("initial", "maximum", "retry_after_max", "max_retry_age"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            # max_retry_age=0 is segment's max_total_backoff_duration=0: no retry at all.
            if not number or value < 0 or (value == 0 and name != "max_retry_age"):
                raise ConfigError(f"RetryPolicy {name}={value!r}: use a positive number of seconds")
        if self.maximum < self.initial:
            raise ConfigError("RetryPolicy maximum must be at least initial")

    @property
    def cap(self) -> float:
        """The longest wait this policy ever asks for: no wait read back from the file exceeds
        it, whatever the clock did since it was written."""
        return max(self.maximum, self.retry_after_max)

    def _strategy(self) -> tenacity.wait.wait_base:
        import tenacity

        if self.jitter:
            return tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum)
        return tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)

    def backoff(self, failures: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first).

        A server's ``Retry-After`` is a floor: the wait is at least the server's value (clamped
        to ``retry_after_max``) and at least the computed backoff, so ``Retry-After: 0`` (or a
        date in the past) never turns the backoff off.
        """
        import tenacity

        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        computed = float(self._strategy()(state))
        if retry_after is None:
            return computed
        return max(computed, min(max(0.0, retry_after), self.retry_after_max))


DEFAULT_RETRY_POLICY = RetryPolicy()


class Action(enum.Enum):
    """What the worker does with a batch after an answer."""

    ACK = "ack"  # delete the messages: the server has them
    SPLIT = "split"  # send each half on its own, to isolate the message the server refuses
    DEAD_LETTER = "dead-letter"  # keep them aside with the server's status and reason
    RETRY = "retry"  # keep them; this batch waits until ``retry_at``
    PAUSE = "pause"  # keep them; this process stops sending for ``pause`` seconds


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`; times are ``time.time()`` values."""

    action: Action
    retry_at: Optional[float] = None  # RETRY: when this batch may be sent again
    breaker_until: Optional[float] = None  # no process sends on this file before then
    pause: float = 0.0  # PAUSE: seconds this process waits before sending again
    count_failure: bool = False  # the answer counts as a failure of the batch and of the file


def decide(
    kind: Kind,
    *,
    messages: int,
    batch_failures: int,
    file_failures: int,
    retry_after: Optional[float],
    now: float,
    policy: RetryPolicy,
    pause: float,
) -> Decision:
    """What to do with a batch of ``messages`` after an answer of ``kind``.

    ``batch_failures`` is how often this batch already failed (its messages' attempts), and
    ``file_failures`` how many uploads in a row failed across the file before this one. A
    transient failure backs off this batch alone; only the ``BREAKER_AFTER``-th failure in a
    row across the file, or a 429 (a rate limit is per write key, so per file), also holds back
    every other batch of every process, for a backoff that grows with the run of failures.
    """
    if kind is Kind.ACCEPTED:
        return Decision(Action.ACK)
    if kind is Kind.SPLIT and messages > 1:
        return Decision(Action.SPLIT)
    if kind in (Kind.SPLIT, Kind.REJECTED):
        return Decision(Action.DEAD_LETTER)
    if kind is Kind.CONFIG:
        return Decision(Action.PAUSE, pause=pause)
    retry_at = now + policy.backoff(batch_failures + 1, retry_after)
    run = file_failures + 1
    breaker_until = None
    if kind is Kind.RATE_LIMITED:
        breaker_until = now + policy.backoff(run, retry_after)
    elif run >= BREAKER_AFTER:
        breaker_until = now + policy.backoff(run - BREAKER_AFTER + 1, retry_after)
    if breaker_until is not None:
        retry_at = max(retry_at, breaker_until)
    return Decision(Action.RETRY, retry_at, breaker_until, count_failure=True)


def next_concurrency(current: int, kind: Kind, maximum: int) -> int:
    """Uploads a process may keep in flight after an answer: halved by a 429, one more after
    each success, between 1 and ``maximum`` (additive increase, multiplicative decrease)."""
    if kind is Kind.RATE_LIMITED:
        return max(1, current // 2)
    if kind is Kind.ACCEPTED:
        return min(maximum, current + 1)
    return max(1, min(current, maximum))


def wait_left(until: float, since: float, now: float, cap: float) -> float:
    """Seconds left of a wait stored in the file as wall-clock times ``since``..``until``.

    Never more than ``cap``, nor more than the wait was when it was written: after the clock
    steps back, a 2 s backoff still ends 2 s from now, not an hour later.
    """
    if until <= now:
        return 0.0
    return max(0.0, min(until - now, until - since, cap))


def give_up_rule(now: float, policy: RetryPolicy, longest_gap: float) -> Tuple[float, int]:
    """When a message retried since ``first_attempt`` with ``attempts`` failures is given up.

    Returns ``(first_attempt_before, min_attempts)``: a message is dead-lettered when it was
    first tried before the first value *and* failed at least the second many times. The age
    is then ``min(now - first_attempt, attempts * longest_gap)``, where ``longest_gap`` is the
    longest an attempt and its wait can take: a clock step forwards (or a week with the
    process stopped) cannot age a message that was hardly tried.
    """
    return now - policy.max_retry_age, max(1, math.ceil(policy.max_retry_age / longest_gap))


def batch_limits(max_messages: int, max_bytes: int) -> Tuple[int, int]:
    """The batch size actually used: the configuration, within the server's limits (2,500
    messages, 500,000 bytes of request body) whatever it says."""
    return (
        max(1, min(int(max_messages), MAX_BATCH_MESSAGES)),
        max(1, min(int(max_bytes), MAX_BATCH_BYTES)),
    )


@dataclass(frozen=True)
class Plan:
    """The result of :func:`schedule`: send now (``wait == 0`` and ``reason == "send"``),
    take back expired leases (``"reclaim"``), or wait ``wait`` seconds (``"busy"``: every
    upload slot is taken; ``"backoff"``; ``"waiting"``: not due yet; ``"linger"``: a due
    partial batch fills up a little; ``"idle"``: nothing ready).
    """

    wait: float
    reason: str


def schedule(
    *,
    now: float,
    ready: int,
    oldest: Optional[float],
    flush_at: int,
    flush_interval: float,
    batch_messages: int,
    linger: float,
    last_send: float,
    force: bool,
    blocked_for: float,
    in_flight: int,
    slots: int,
    next_expiry: Optional[float],
) -> Plan:
    """When the next batch goes out.

    ``ready`` counts waiting messages no further than ``batch_messages``; ``oldest`` is when
    the oldest of them was recorded; ``blocked_for`` is what is left of the breaker or of this
    process's pause. A batch is due once ``min(flush_at, batch_messages)`` wait (a ``flush_at``
    above the batch size must not wait for a count no batch reaches), once the oldest is
    ``flush_interval`` old, or when forced (flush, drain, sync mode). Under a steady stream a
    partial batch lingers a little after the last send, so requests are fewer and fuller.
    """
    if in_flight >= slots:
        return Plan(flush_interval, "busy")
    if blocked_for > 0:
        return Plan(blocked_for, "backoff")
    if ready <= 0:
        if next_expiry is None:
            return Plan(flush_interval, "idle")
        if next_expiry <= now:
            return Plan(0.0, "reclaim")
        return Plan(max(_MIN_WAIT, min(flush_interval, next_expiry - now)), "idle")
    # A message recorded "in the future" means the clock stepped back: it is due, not younger.
    age = 0.0 if oldest is None else (now - oldest if oldest <= now else flush_interval)
    due = force or ready >= min(flush_at, batch_messages) or age >= flush_interval
    if not due:
        return Plan(max(_MIN_WAIT, flush_interval - age), "waiting")
    if not force and ready < batch_messages and now < last_send + linger:
        return Plan(max(_MIN_WAIT, last_send + linger - now), "linger")
    return Plan(0.0, "send")
