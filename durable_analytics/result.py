"""What a call returns: segment-analytics-python's ``(success, message)``, with the messageId.

``success, msg = analytics.track(...)`` works as it does with segment, and
``analytics.track(...).message_id`` gives the id without unpacking. ``success`` is False only
when the message was not stored (the queue was full, or ``before_send`` dropped it); ``msg``
is the message as it will be sent, with the keys segment's dict has (``None`` for an id or
page name not given).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["CallResult", "returned_message"]

# Keys segment's returned dict always has, by message type, that the wire form leaves out
# when they are empty.
_ALWAYS = ("userId", "anonymousId")
_PAGE = ("userId", "anonymousId", "name", "category")


class CallResult(Tuple[bool, Dict[str, Any]]):
    """``(success, message)``; also ``.success``, ``.message`` and ``.message_id``."""

    __slots__ = ()

    def __new__(cls, success: bool, message: Dict[str, Any]) -> CallResult:
        return tuple.__new__(cls, (success, message))

    @property
    def success(self) -> bool:
        """True when the message was stored (False: the queue was full, or ``before_send``
        dropped it; nothing stored)."""
        return self[0]

    @property
    def message(self) -> Dict[str, Any]:
        return self[1]

    @property
    def message_id(self) -> str:
        """The message's ``messageId``."""
        return self[1]["messageId"]

    def __repr__(self) -> str:
        return f"CallResult(success={self[0]!r}, message_id={self[1].get('messageId')!r})"


def returned_message(wire: Dict[str, Any]) -> Dict[str, Any]:
    """The wire dict with the keys segment returns even when empty (as ``None``).

    Called after the message was serialised: adding keys changes nothing that is stored.
    """
    for key in _PAGE if wire["type"] in ("page", "screen") else _ALWAYS:
        if key not in wire:
            wire[key] = None
    return wire
