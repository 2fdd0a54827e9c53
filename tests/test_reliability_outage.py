"""Outage: refused connections, then 503, then 429 with Retry-After, then recovery.

Everything recorded before, during and after the outage arrives, once; the worker's attempts
while the server is down stay within what the backoff allows (computed from the policy, which
has no jitter here), and every Retry-After is obeyed, up to ``retry_after_max``.
"""

from __future__ import annotations

from pathlib import Path

from reliability_helpers import OUTAGE_RETRY, attempts_allowed, outage_campaign, suite_seed

from durable_analytics import RetryPolicy
from durable_analytics.policy import BREAKER_AFTER, DEFAULT_MAX_IN_FLIGHT


def test_attempts_allowed_follows_the_policy() -> None:
    policy = RetryPolicy(initial=0.05, maximum=0.2, jitter=False)
    # Waits 0.05, 0.1, 0.2, 0.2, ...: attempts at 0, 0.05, 0.15, 0.35, 0.55, ...
    assert attempts_allowed(policy, 0.0) == 1
    assert attempts_allowed(policy, 0.14) == 2
    assert attempts_allowed(policy, 0.16) == 3
    assert attempts_allowed(policy, 0.54) == 4
    assert attempts_allowed(policy, 0.56) == 5
    assert attempts_allowed(policy, 10.36) == 4 + 50


def test_outage_then_recovery_delivers_everything_without_a_storm(tmp_path: Path) -> None:
    seed = suite_seed()
    report = outage_campaign(tmp_path, seed=seed, retry_after=0.3)
    summary = report.as_dict()
    print(summary)
    why = f"seed={seed}: {summary}"

    assert report.flushed, why
    assert report.lost == [], why
    assert report.delivered == set(report.recorded), why
    assert report.duplicates == 0, why  # no kill here: a duplicate would be a bug
    assert report.leftovers == {"ready": 0, "leased": 0, "dead": 0}, why
    assert report.collector_errors == [], why

    # Each kind of failure was met, and none was a reason to drop or dead-letter anything.
    for status in ("network", "503", "429"):
        assert report.statuses.get(status, 0) >= 1, why
    # No storm: until BREAKER_AFTER failures in a row open the file-wide breaker, failed batches
    # wait alone (and the uploads on the wire then fail too); after that, one probe at a time,
    # at most what the backoff schedule fits in the outage.
    before_the_breaker = BREAKER_AFTER - 1 + DEFAULT_MAX_IN_FLIGHT
    assert report.failed_attempts <= report.attempts_allowed + before_the_breaker, why
    assert report.attempts_allowed < 40, why  # the bound itself is small: ~1.8 s of outage

    # Retry-After obeyed: the next request never came sooner than the server asked.
    assert len(report.retry_after_gaps) >= 1, why
    assert min(report.retry_after_gaps) >= report.retry_after, why
    # An hour's Retry-After is clamped to retry_after_max: waited that, not an hour.
    capped = report.capped_retry_after
    assert capped is not None, why
    assert capped["cap"] == OUTAGE_RETRY.retry_after_max
    assert OUTAGE_RETRY.retry_after_max <= capped["waited"] < 60, why
