"""Who the user is and where the request came from, for every call made while serving it.

A web or task integration binds one :class:`RequestContext` per request (or task) in a
:mod:`contextvars` variable; :class:`~durable_analytics.Client` merges it into each message it
records. A context variable belongs to one thread or one asyncio task, so concurrent requests
never see each other's context. No framework is imported here.

Precedence inside a message: what the call passes wins over the request's context, which wins
over the client's ``default_context``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Union

from .messages import Id, Message

__all__ = [
    "RequestContext",
    "UserIdSource",
    "current",
    "activate",
    "deactivate",
    "bound",
    "set_user_id",
    "merge",
    "apply",
]

log = logging.getLogger("durable_analytics")

#: A user id, or a function returning one (or ``None``), called at most once per request and
#: only when a call needs it: the logged-in user is often known late (after a login view) or
#: costs a session lookup that requests which record nothing should not pay for.
UserIdSource = Union[Id, Callable[[], Optional[Id]], None]


class RequestContext:
    """The context of one request or task. Mutable only through :func:`set_user_id`."""

    __slots__ = ("ip", "user_agent", "url", "path", "referrer", "search", "extra", "_user")

    def __init__(
        self,
        *,
        ip: Optional[str] = None,
        user_agent: Optional[str] = None,
        url: Optional[str] = None,
        path: Optional[str] = None,
        referrer: Optional[str] = None,
        search: Optional[str] = None,
        user_id: UserIdSource = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.ip = ip or None
        self.user_agent = user_agent or None
        self.url = url or None
        self.path = path or None
        self.referrer = referrer or None
        self.search = search or None
        self.extra: Dict[str, Any] = dict(extra or {})
        self._user: Any = user_id if callable(user_id) else _Resolved(user_id)

    @property
    def user_id(self) -> Optional[Id]:
        """The logged-in user's id, resolved on first use. A failing resolver counts as none."""
        if not isinstance(self._user, _Resolved):
            try:
                value = self._user()
            except Exception:
                log.warning("the user id resolver failed; calls carry no user id", exc_info=True)
                value = None
            self._user = _Resolved(value)
        return self._user.value

    def fragment(self) -> Dict[str, Any]:
        """This context in the message's ``context`` shape (Segment's field names)."""
        out: Dict[str, Any] = dict(self.extra)
        if self.ip:
            out["ip"] = self.ip
        if self.user_agent:
            out["userAgent"] = self.user_agent
        page = {
            key: value
            for key, value in (
                ("url", self.url),
                ("path", self.path),
                ("referrer", self.referrer),
                ("search", self.search),
            )
            if value
        }
        if page:
            out["page"] = page
        return out

    def __repr__(self) -> str:
        return f"RequestContext(path={self.path!r})"


@dataclasses.dataclass(frozen=True)
class _Resolved:
    value: Optional[Id]


_CURRENT: contextvars.ContextVar[Optional[RequestContext]] = contextvars.ContextVar(
    "durable_analytics_request_context", default=None
)


def current() -> Optional[RequestContext]:
    """The context bound in this thread or task, if any."""
    return _CURRENT.get()


def activate(context: RequestContext) -> contextvars.Token:
    """Bind ``context``; pass the returned token to :func:`deactivate` when the request ends."""
    return _CURRENT.set(context)


def deactivate(token: contextvars.Token) -> None:
    """Restore what was bound before the matching :func:`activate`."""
    _CURRENT.reset(token)


@contextmanager
def bound(context: RequestContext) -> Iterator[RequestContext]:
    """``with bound(RequestContext(...)):`` binds it for the block."""
    token = activate(context)
    try:
        yield context
    finally:
        deactivate(token)


def set_user_id(user_id: Optional[Id]) -> bool:
    """Name the logged-in user for the rest of the current request (e.g. right after login).

    Returns False when no request context is bound (then nothing changes). It changes the
    bound object, so code running in a copied context (a thread pool) still reaches it.
    """
    context = _CURRENT.get()
    if context is None:
        return False
    context._user = _Resolved(user_id)
    return True


def merge(context: RequestContext, message: Message) -> Message:
    """``message`` with ``context`` filled in where the call left it out (a pure function).

    Keys the call's own ``context`` sets win; nested mappings (``page``) are merged one level
    deep. The user id fills ``user_id`` only when the call passes none (never for ``alias``,
    whose ``user_id`` names the new identity). A ``context`` that is not a mapping is left
    alone, so that the encoder reports it.
    """
    changes: Dict[str, Any] = {}
    given = message.context
    fragment = context.fragment()
    if fragment and (given is None or isinstance(given, Mapping)):
        merged = fragment
        for key, value in (given or {}).items():
            below = merged.get(key)
            if isinstance(below, Mapping) and isinstance(value, Mapping):
                merged[key] = {**below, **value}
            else:
                merged[key] = value
        changes["context"] = merged
    if message.user_id is None and message.type != "alias":
        user_id = context.user_id
        if user_id is not None:
            changes["user_id"] = user_id
    return dataclasses.replace(message, **changes) if changes else message


def apply(message: Message) -> Message:
    """``message`` merged with the current request's context, or unchanged outside one."""
    context = _CURRENT.get()
    return message if context is None else merge(context, message)
