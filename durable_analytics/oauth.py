"""OAuth for the batch API, as segment-analytics-python does it: a bearer token from the auth
server, obtained with a JWT signed by the client's private key, refreshed before it expires.

Needs the ``oauth`` extra (``pip install 'durable-analytics[oauth]'``: PyJWT with its crypto
backend), imported only when OAuth is configured. The token is fetched in the delivery thread
when a request needs one; a token server that cannot give one makes the upload fail like a
network error (the messages stay queued and are retried), never a call.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Optional

import requests

from .errors import ConfigError

__all__ = ["TokenAuth", "refresh_at"]

GRANT = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How long the signed assertion is valid: the auth server sees it within a request timeout.
ASSERTION_SECONDS = 60
#: The token lifetime assumed when the server gives none.
DEFAULT_EXPIRES_IN = 3600.0


def refresh_at(issued: float, expires_in: float) -> float:
    """When to fetch a new token: halfway through its life (as segment), so a slow token
    server or a clock step never leaves requests with an expired one."""
    return issued + max(0.0, expires_in) / 2


class TokenError(requests.exceptions.RequestException):
    """No token could be obtained: the upload fails as a network error would (retried)."""


class TokenAuth(requests.auth.AuthBase):
    """``requests`` auth that sets ``Authorization: Bearer <token>``, fetching the token from
    ``{auth_server}/token`` and refreshing it before it expires. Thread-safe."""

    def __init__(
        self,
        client_id: str,
        private_key: str,
        key_id: str,
        auth_server: str,
        scope: str,
        *,
        timeout: Any = 15.0,
        clock: Callable[[], float] = time.time,
        session: Optional[requests.Session] = None,
    ) -> None:
        try:
            import jwt
        except ImportError:
            raise ConfigError(
                "OAuth needs PyJWT with its crypto backend: pip install 'durable-analytics[oauth]'"
            ) from None
        self._jwt = jwt
        self.client_id = client_id
        self._private_key = private_key
        self.key_id = key_id
        self.auth_server = auth_server.rstrip("/")
        self.scope = scope
        self.timeout = timeout
        self.clock = clock
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._refresh_at = 0.0
        self.fetches = 0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def token(self) -> str:
        """The current token, fetched first when there is none or it is due for refresh."""
        with self._lock:
            now = self.clock()
            if self._token is None or now >= self._refresh_at:
                self._token, expires_in = self._fetch(now)
                self._refresh_at = refresh_at(now, expires_in)
            return self._token

    def invalidate(self) -> None:
        """Forget the token (the API refused it): the next request fetches a new one."""
        with self._lock:
            self._token = None

    def _assertion(self, now: float) -> str:
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.auth_server,
            "iat": int(now) - 5,
            "exp": int(now) + ASSERTION_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        try:
            return self._jwt.encode(
                claims, self._private_key, algorithm="RS256", headers={"kid": self.key_id}
            )
        except (ValueError, TypeError, self._jwt.PyJWTError) as exc:
            raise TokenError(
                f"OAuth: cannot sign the token request with oauth_client_key ({exc}); "
                "pass the PEM private key of oauth_key_id"
            ) from None

    def _fetch(self, now: float) -> tuple[str, float]:
        self.fetches += 1
        form = {
            "grant_type": GRANT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(now),
            "scope": self.scope,
        }
        url = f"{self.auth_server}/token"
        response = self._session.post(url, data=form, timeout=self.timeout)
        if response.status_code != 200:
            raise TokenError(
                f"OAuth: the token server {url} answered HTTP {response.status_code}; check "
                "oauth_client_id, oauth_key_id and oauth_auth_server"
            )
        try:
            payload = response.json()
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"OAuth: {url} answered 200 without an access_token") from None
        try:
            expires_in = float(payload.get("expires_in", DEFAULT_EXPIRES_IN))
        except (TypeError, ValueError):
            expires_in = DEFAULT_EXPIRES_IN
        return str(token), expires_in

    def close(self) -> None:
        self._session.close()
