"""The exception hierarchy: every error the library raises is an :class:`AnalyticsError`.

Errors about a caller's input are also instances of the builtins other clients raise, so that
code written for them keeps catching ours: ``ValueError`` and ``TypeError`` (the seed's Go
library's kinds), ``AssertionError`` (segment-analytics-python's ``require``) and, for an
oversized message, ``RuntimeError`` (segment's).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "AnalyticsError",
    "ConfigError",
    "ValidationError",
    "FieldTypeError",
    "MessageTooLarge",
    "QueueError",
    "QueueFull",
    "QueueCorrupt",
    "QueueLocked",
    "DeliveryError",
    "TransientError",
    "RejectedError",
    "AuthError",
]


class AnalyticsError(Exception):
    """Base of every durable-analytics error."""


class ConfigError(AnalyticsError, ValueError, AssertionError):
    """A client or command setting is missing or invalid."""


class ValidationError(AnalyticsError, ValueError, AssertionError):
    """A message was rejected at the call; nothing was stored."""


class FieldTypeError(ValidationError, TypeError):
    """A field has the wrong type (for example ``traits`` that is not a mapping)."""


class MessageTooLarge(ValidationError, RuntimeError):
    """A message's JSON is over ``max_message_bytes``; nothing was stored."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class QueueError(AnalyticsError):
    """The on-disk queue cannot be used; the message says what to do."""


class QueueFull(QueueError):
    """The queue is at its size limit and the overflow policy is ``"raise"``."""


class QueueCorrupt(QueueError):
    """The queue file is unreadable or not a durable-analytics queue."""


class QueueLocked(QueueError):
    """Another process held the queue file's write lock for too long."""


class DeliveryError(AnalyticsError):
    """A batch could not be delivered; passed to ``on_error`` with the messages concerned, and
    raised by a ``sync_mode`` call. Like segment's ``APIError`` it has ``.status`` (the HTTP
    status, ``None`` for a network error), ``.code`` (what kind of failure) and ``.message``."""

    code = "error"

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TransientError(DeliveryError):
    """The server may accept the batch later (timeouts, resets, 408, 429, 5xx)."""

    code = "transient"

    def __init__(
        self, message: str, *, status: Optional[int] = None, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class RejectedError(DeliveryError):
    """The server refused the message for good (400, 413, other 4xx), or it was retried past
    ``max_retry_age``: it was dead-lettered (kept on disk, not sent again by itself)."""

    code = "rejected"


class AuthError(DeliveryError):
    """401 or 403: the write key is wrong or forbidden. Messages are kept; sending pauses."""

    code = "unauthorized"
