"""Django: settings configure the module-level API, a middleware binds the request context.

    INSTALLED_APPS = [..., "durable_analytics.integrations.django"]
    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "durable_analytics.integrations.django.AnalyticsMiddleware",
    ]
    DURABLE_ANALYTICS = {"write_key": "...", "flush_at": 50}   # Client options

Then ``import durable_analytics as analytics; analytics.track(None, "Signed Up")`` in a view
records the logged-in user, ip, user agent and page. The app's ``ready()`` only applies the
settings; the client itself is created by the first call in each process, so a project loaded
before gunicorn's or uWSGI's workers fork (``--preload``) opens no file and starts no thread
in the master.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from ...messages import Id
from ...request_context import RequestContext, bound

__all__ = ["AnalyticsMiddleware", "context_from_request", "request_user_id"]


def request_user_id(request: Any) -> Optional[Id]:
    """The primary key of ``request.user`` (set by Django's auth middleware), if logged in."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


def _absolute_url(request: Any) -> Optional[str]:
    try:
        return request.build_absolute_uri()
    except Exception:  # DisallowedHost: a Host header the project does not serve
        return None


def context_from_request(
    request: Any, user_id: Optional[Callable[[], Optional[Id]]] = None
) -> RequestContext:
    """The request context of a Django ``HttpRequest``.

    ``ip`` is ``REMOTE_ADDR``: behind a proxy, have the proxy set it (or a middleware that
    trusts your proxy's ``X-Forwarded-For``); this code does not trust that header itself.
    """
    meta = request.META
    query = meta.get("QUERY_STRING", "")
    return RequestContext(
        ip=meta.get("REMOTE_ADDR"),
        user_agent=meta.get("HTTP_USER_AGENT"),
        url=_absolute_url(request),
        path=request.path,
        referrer=meta.get("HTTP_REFERER"),
        search=f"?{query}" if query else None,
        user_id=user_id if user_id is not None else (lambda: request_user_id(request)),
    )


class AnalyticsMiddleware:
    """Binds the request context while the view runs (sync and async stacks alike).

    Place it after ``AuthenticationMiddleware``. The user is read when a call first needs it
    (in a sync stack), so requests that record nothing cost no session lookup; override
    :meth:`get_user_id` to name users differently.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def get_user_id(self, request: Any) -> Optional[Id]:
        return request_user_id(request)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        with bound(context_from_request(request, lambda: self.get_user_id(request))):
            return self.get_response(request)

    async def _acall(self, request: Any) -> Any:
        # In an async stack the user must be loaded here: a lazy read from an async view
        # would touch the session database from the event loop, which Django forbids.
        auser = getattr(request, "auser", None)
        if auser is not None:
            user = await auser()
            request.user = user
        user_id = self.get_user_id(request)
        with bound(context_from_request(request, lambda: user_id)):
            return await self.get_response(request)
