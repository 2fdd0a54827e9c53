"""``before_send``: the application's last word on each message before it reaches the disk.

The hook gets a private copy of the validated message in its wire form (a JSON-plain dict)
and returns it, changed or not, or ``None`` to drop it. A changed message is validated again,
by the same rules as a call. A hook that raises, or returns something that is not a valid
message, must not cost the event: the message is stored as it was and the failure is logged,
naming the hook and where it failed but never the message's content (the exception text of
a hook may quote it). Size is checked after the hook, which may shrink a message.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any, Callable, Dict, Optional

from .errors import ValidationError

__all__ = ["BeforeSend", "apply_before_send", "DROP"]

log = logging.getLogger("durable_analytics")

BeforeSend = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]

#: What :func:`apply_before_send` returns for a message the hook dropped.
DROP = None


def apply_before_send(
    hook: BeforeSend,
    wire: Dict[str, Any],
    text: str,
    revalidate: Callable[[Dict[str, Any]], Dict[str, Any]],
) -> Optional[Dict[str, Any]]:
    """The wire dict to store (``wire`` itself when unchanged or when the hook failed), or
    :data:`DROP`. ``text`` is ``wire`` as JSON: the hook's private copy is read from it, so
    that nothing it does reaches the caller's own dicts or the fallback."""
    try:
        result = hook(json.loads(text))
    except Exception as exc:
        _report(hook, exc, "raised")
        return wire
    if result is None:
        return DROP
    if result == wire:
        return wire
    try:
        return revalidate(result)
    except ValidationError as exc:
        _report(hook, exc, "returned an invalid message")
        return wire


def _report(hook: BeforeSend, exc: BaseException, what: str) -> None:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    log.error(
        "before_send %s %s (%s%s); the message was stored as it was",
        getattr(hook, "__qualname__", type(hook).__name__),
        what,
        type(exc).__name__,
        where,
    )
