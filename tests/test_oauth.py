"""OAuth as segment-analytics-python does it, against a real token endpoint on 127.0.0.1 that
checks the signed assertion, and the collector checking the bearer token."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

jwt = pytest.importorskip("jwt", reason="the oauth extra (pyjwt[crypto]) is not installed")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from durable_analytics import Client, ConfigError  # noqa: E402
from durable_analytics.oauth import TokenAuth, refresh_at  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


class TokenServer:
    """``POST /token``: verifies the RS256 client assertion, answers a fresh token each time."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.requests: List[Dict[str, Any]] = []
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(
                    self.rfile.read(int(self.headers["Content-Length"])).decode()
                )
                claims = jwt.decode(
                    form["client_assertion"][0],
                    KEY.public_key(),
                    algorithms=["RS256"],
                    audience=server.url,
                    leeway=120,  # the refresh test moves its clock ahead
                )
                header = jwt.get_unverified_header(form["client_assertion"][0])
                server.requests.append({"form": form, "claims": claims, "kid": header["kid"]})
                body = json.dumps(
                    {
                        "access_token": f"token-{len(server.requests)}",
                        "expires_in": server.expires_in,
                    }
                ).encode()
                self.send_response(server.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.close()


def oauth_options(server: TokenServer) -> Dict[str, Any]:
    return {
        "oauth_client_id": "client-1",
        "oauth_client_key": PEM,
        "oauth_key_id": "key-1",
        "oauth_auth_server": server.url,
    }


def test_uploads_carry_the_bearer_token_from_the_auth_server(
    token_server: TokenServer, queue_file: Path
) -> None:
    with Collector(bearer_token="token-1") as collector:
        client = Client("k", collector.url, queue_path=queue_file, **oauth_options(token_server))
        try:
            message_id = client.track("u", "With OAuth").message_id
            assert client.flush() is True
        finally:
            client.shutdown(timeout=0)
        assert collector.message_ids == {message_id}
        assert collector.requests[0].headers["Authorization"] == "Bearer token-1"
    [request] = token_server.requests
    assert request["form"]["grant_type"] == ["client_credentials"]
    assert request["form"]["scope"] == ["tracking_api:write"]
    assert request["claims"]["iss"] == request["claims"]["sub"] == "client-1"
    assert request["kid"] == "key-1"


def test_the_collector_refuses_a_wrong_or_missing_bearer_token(queue_file: Path) -> None:
    with Collector(bearer_token="right") as collector:
        client = Client("k", collector.url, queue_path=queue_file, flush_timeout=1.0)
        try:
            client.track("u", "Basic only")
            assert client.flush(timeout=1.0) is False
        finally:
            client.shutdown(timeout=0)
        assert [r.status for r in collector.requests] == [401]
        assert client.stats().ready == 1


def test_the_token_is_refreshed_before_it_expires(token_server: TokenServer) -> None:
    start = time.time()
    now = [start]
    token_server.expires_in = 100
    auth = TokenAuth(
        "client-1", PEM, "key-1", token_server.url, "tracking_api:write", clock=lambda: now[0]
    )
    assert auth.token() == "token-1"
    now[0] += 49
    assert auth.token() == "token-1" and auth.fetches == 1
    now[0] += 1  # halfway through its 100 s: refreshed while still valid
    assert auth.token() == "token-2" and auth.fetches == 2
    assert refresh_at(start, 100) == start + 50


def test_a_failing_token_server_keeps_the_messages(
    token_server: TokenServer, queue_file: Path
) -> None:
    token_server.status = 401
    with Collector(bearer_token="token-1") as collector:
        client = Client(
            "k",
            collector.url,
            queue_path=queue_file,
            flush_timeout=1.0,
            **oauth_options(token_server),
        )
        try:
            client.track("u", "Kept")
            assert client.flush(timeout=1.0) is False
        finally:
            client.shutdown(timeout=0)
        assert collector.requests == []
    assert client.stats().ready == 1 and client.stats().dead == 0


def test_a_bad_private_key_fails_the_upload_not_the_call(
    token_server: TokenServer, queue_file: Path
) -> None:
    options = {**oauth_options(token_server), "oauth_client_key": "not a key"}
    with Collector(bearer_token="token-1") as collector:
        client = Client("k", collector.url, queue_path=queue_file, flush_timeout=1.0, **options)
        try:
            assert client.track("u", "Kept").success is True
            assert client.flush(timeout=1.0) is False
        finally:
            client.shutdown(timeout=0)
    assert token_server.requests == [] and client.stats().ready == 1


def test_oauth_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="go together|together"):
        Client("k", send=False, oauth_client_id="only-this")


def test_a_token_the_api_refuses_is_replaced_by_a_new_one(
    token_server: TokenServer, queue_file: Path
) -> None:
    """The API answers 401 to token-1 (revoked): the next attempt fetches token-2."""
    with Collector(bearer_token="token-2") as collector:
        client = Client(
            "k",
            collector.url,
            queue_path=queue_file,
            auth_pause=0.05,
            flush_timeout=5.0,
            **oauth_options(token_server),
        )
        try:
            message_id = client.track("u", "Retried").message_id
            assert client.flush() is True
        finally:
            client.shutdown(timeout=0)
        assert [r.status for r in collector.requests] == [401, 200]
        assert collector.message_ids == {message_id}
    assert len(token_server.requests) == 2
