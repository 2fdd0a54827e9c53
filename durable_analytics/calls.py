"""The six calls (identify, track, page, screen, group, alias), each building its typed message.

Apart from the client (client.py) because these are the library's public signatures, keyword-
and position-compatible with segment-analytics-python, and nothing else: each only builds a
message from its arguments and hands it to ``enqueue``, which validates and stores it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from .messages import Alias, Group, Id, Identify, Message, Page, Screen, Timestamp, Track
from .result import CallResult

__all__ = ["MessageCalls", "Properties"]

Properties = Optional[Mapping[str, Any]]


class MessageCalls:
    """The calls of :class:`~durable_analytics.client.Client`, over its ``enqueue``."""

    enqueue: Callable[[Message], CallResult]

    def identify(
        self,
        user_id: Optional[Id] = None,
        traits: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Tie a user to their traits. Returns ``(success, message)``."""
        return self.enqueue(
            Identify(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                traits=traits,
            )
        )

    def track(
        self,
        user_id: Optional[Id] = None,
        event: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Record an action a user performed. Returns ``(success, message)``."""
        return self.enqueue(
            Track(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                event=event,
                properties=properties,
            )
        )

    def page(
        self,
        user_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Record a page view. Returns ``(success, message)``."""
        return self.enqueue(
            Page(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                name=name,
                category=category,
                properties=properties,
            )
        )

    def screen(
        self,
        user_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Record a mobile screen view. Returns ``(success, message)``."""
        return self.enqueue(
            Screen(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                name=name,
                category=category,
                properties=properties,
            )
        )

    def group(
        self,
        user_id: Optional[Id] = None,
        group_id: Optional[Id] = None,
        traits: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Associate a user with a group. Returns ``(success, message)``."""
        return self.enqueue(
            Group(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                group_id=group_id,
                traits=traits,
            )
        )

    def alias(
        self,
        previous_id: Optional[Id] = None,
        user_id: Optional[Id] = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> CallResult:
        """Link ``previous_id`` to ``user_id``. Returns ``(success, message)``."""
        return self.enqueue(
            Alias(
                user_id=user_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                previous_id=previous_id,
            )
        )
