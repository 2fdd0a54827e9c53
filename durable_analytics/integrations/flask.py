"""Flask: an extension that binds each request's context and owns the app's client.

    from durable_analytics.integrations.flask import DurableAnalytics
    analytics = DurableAnalytics()
    analytics.init_app(app)          # or DurableAnalytics(app)
    ...
    analytics.client.track(None, "Signed Up")   # user, ip, page filled in from the request

``app.config["DURABLE_ANALYTICS"]`` (a dict of :class:`~durable_analytics.Client` options)
gives the app its own client; without it ``client`` is the module-level default client
(``durable_analytics.write_key = ...`` or the environment). The client is created on first
use in each process, so an app loaded before a pre-fork server forks is safe.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, Optional

import flask

from ..client import Client
from ..messages import Id
from ..request_context import RequestContext, activate, deactivate

__all__ = ["DurableAnalytics", "CONFIG_KEY", "flask_login_user_id"]

#: The ``app.config`` key holding the app's client options.
CONFIG_KEY = "DURABLE_ANALYTICS"
_EXTENSION = "durable_analytics"
_TOKEN = "_durable_analytics_token"


def flask_login_user_id() -> Optional[Id]:
    """Flask-Login's ``current_user`` when the app uses Flask-Login and one is logged in."""
    login = sys.modules.get("flask_login")
    if login is None:
        return None
    user = login.current_user
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.get_id()


class _AppState:
    """One app's client options and the client built from them (per process)."""

    def __init__(self, options: Optional[Dict[str, Any]]) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.client: Optional[Client] = None


class DurableAnalytics:
    """The Flask extension. ``user_id()`` names the logged-in user (default: Flask-Login's)."""

    def __init__(
        self,
        app: Optional[flask.Flask] = None,
        *,
        user_id: Callable[[], Optional[Id]] = flask_login_user_id,
    ) -> None:
        self.user_id = user_id
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        options = app.config.get(CONFIG_KEY)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"app.config[{CONFIG_KEY!r}] must be a dict of Client options")
        app.extensions[_EXTENSION] = _AppState(dict(options) if options else None)
        app.before_request(self._bind)
        app.teardown_request(self._unbind)

    @property
    def client(self) -> Client:
        """The current app's client, created on first use in this process."""
        state: _AppState = flask.current_app.extensions[_EXTENSION]
        if state.options is None:
            from .. import _client

            return _client()
        if state.client is None:
            with state.lock:
                if state.client is None:
                    state.client = Client(**state.options)
        return state.client

    def _bind(self) -> None:
        request = flask.request
        query = request.query_string.decode("latin-1")
        context = RequestContext(
            ip=request.remote_addr,
            user_agent=request.user_agent.string,
            url=request.url,
            path=request.path,
            referrer=request.referrer,
            search=f"?{query}" if query else None,
            user_id=self.user_id,
        )
        setattr(flask.g, _TOKEN, activate(context))

    def _unbind(self, _exc: Optional[BaseException]) -> None:
        token = flask.g.pop(_TOKEN, None)
        if token is not None:
            deactivate(token)
