"""The retry policy's old home: :mod:`durable_analytics.policy` holds it with every other
delivery decision. Kept so that ``from durable_analytics.retry import RetryPolicy`` works."""

from .policy import DEFAULT_RETRY_POLICY, RetryPolicy, parse_retry_after

__all__ = ["RetryPolicy", "parse_retry_after", "DEFAULT_RETRY_POLICY"]
