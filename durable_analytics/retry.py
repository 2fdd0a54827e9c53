"""The retry policy, as one value: how long to wait after a failure, and for how long to try.

Backoff is exponential with full jitter (tenacity's ``wait_random_exponential``) and capped;
a server's ``Retry-After`` wins over it, within its own cap. The worker stores the resulting
retry time in the queue file, so the wait survives restarts and binds every process.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # imported on first use: `import durable_analytics` stays light
    import tenacity

__all__ = ["RetryPolicy", "parse_retry_after", "DEFAULT_RETRY_POLICY"]

SECONDS_PER_DAY = 86_400.0


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
    """How the worker waits between failed uploads.

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

    def _strategy(self) -> tenacity.wait.wait_base:
        import tenacity

        if self.jitter:
            return tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum)
        return tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)

    def backoff(self, failures: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.retry_after_max)
        import tenacity

        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        return float(self._strategy()(state))


DEFAULT_RETRY_POLICY = RetryPolicy()
