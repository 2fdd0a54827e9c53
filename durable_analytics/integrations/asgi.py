"""ASGI (FastAPI, Starlette and any ASGI app): a middleware that binds each request's context.

    from durable_analytics.integrations.asgi import AnalyticsMiddleware
    app.add_middleware(AnalyticsMiddleware)        # FastAPI / Starlette
    app = AnalyticsMiddleware(app)                  # any ASGI app

The context lives in a context variable of the request's task, so concurrent requests never
see each other's ip, page or user. Calls made by the app while it serves the request carry it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional

from ..messages import Id
from ..request_context import RequestContext, activate, deactivate

__all__ = ["AnalyticsMiddleware", "context_from_scope", "scope_user_id"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]
UserIdOf = Callable[[Scope], Optional[Id]]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def scope_user_id(scope: Scope) -> Optional[Id]:
    """Starlette's ``AuthenticationMiddleware`` user (``scope["user"]``) when authenticated."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        return user.identity or None
    except (AttributeError, NotImplementedError):
        return getattr(user, "display_name", None) or None


def _headers(scope: Scope) -> Dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
    }


def context_from_scope(scope: Scope, user_id: UserIdOf = scope_user_id) -> RequestContext:
    """The request context of an HTTP or WebSocket scope (the user resolved on first use).

    ``ip`` is the connecting peer: behind a proxy, let the server rewrite it from trusted
    forwarding headers (``uvicorn --proxy-headers``); this code does not trust them itself.
    """
    headers = _headers(scope)
    scheme = scope.get("scheme") or "http"
    host = headers.get("host")
    if host is None and scope.get("server"):
        server_host, port = scope["server"]
        host = (
            server_host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{server_host}:{port}"
        )
    path = scope.get("path") or "/"
    query = (scope.get("query_string") or b"").decode("latin-1")
    search = f"?{query}" if query else None
    client = scope.get("client")
    return RequestContext(
        ip=client[0] if client else None,
        user_agent=headers.get("user-agent"),
        url=f"{scheme}://{host}{path}{search or ''}" if host else None,
        path=path,
        referrer=headers.get("referer"),
        search=search,
        user_id=lambda: user_id(scope),
    )


class AnalyticsMiddleware:
    """Binds the request context around the app for HTTP and WebSocket scopes.

    ``user_id(scope)`` names the logged-in user (default: :func:`scope_user_id`); it is read
    when a call first needs it, so authentication middleware may run inside this one.
    """

    def __init__(self, app: ASGIApp, *, user_id: UserIdOf = scope_user_id) -> None:
        self.app = app
        self.user_id = user_id

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = activate(context_from_scope(scope, self.user_id))
        try:
            await self.app(scope, receive, send)
        finally:
            deactivate(token)
