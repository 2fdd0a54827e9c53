"""The Flask extension through Flask's test client, against the collector."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

flask = pytest.importorskip("flask")

from durable_analytics import Client  # noqa: E402
from durable_analytics.integrations.flask import DurableAnalytics  # noqa: E402
from durable_analytics.request_context import current, set_user_id  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402


def test_request_context_and_user_reach_the_collector(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    client = make_client()
    app = flask.Flask("shop")
    DurableAnalytics(app, user_id=lambda: flask.request.headers.get("X-User"))

    @app.route("/cart")
    def cart() -> str:
        return client.track(None, "Cart Viewed", anonymous_id="a-1").message_id

    @app.route("/login", methods=["POST"])
    def login() -> str:
        set_user_id("new-user")  # logged in during this request
        return client.identify(None, {"plan": "pro"}).message_id

    http = app.test_client()
    viewed = http.get(
        "/cart?coupon=X",
        headers={"User-Agent": "Browser/3", "Referer": "https://ref.test/", "X-User": "u-1"},
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    ).text
    anonymous = http.get("/cart").text
    logged_in = http.post("/login").text
    assert current() is None
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    message = by_id[viewed]
    assert message["userId"] == "u-1"
    assert message["context"]["ip"] == "192.0.2.10"
    assert message["context"]["userAgent"] == "Browser/3"
    assert message["context"]["page"] == {
        "url": "http://localhost/cart?coupon=X",
        "path": "/cart",
        "referrer": "https://ref.test/",
        "search": "?coupon=X",
    }
    assert "userId" not in by_id[anonymous]
    assert by_id[logged_in]["userId"] == "new-user"


def test_app_config_gives_the_app_its_own_client(collector: Collector, tmp_path: Path) -> None:
    app = flask.Flask("configured")
    app.config["DURABLE_ANALYTICS"] = {
        "write_key": "flask-key",
        "endpoint": collector.url,
        "queue_path": tmp_path / "flask.sqlite3",
        "flush_interval": 0.05,
    }
    analytics = DurableAnalytics()
    analytics.init_app(app)

    @app.route("/")
    def index() -> str:
        return analytics.client.page(None, name="Home", anonymous_id="a").message_id

    try:
        message_id = app.test_client().get("/", headers={"User-Agent": "UA"}).text
        with app.app_context():
            client = analytics.client
            assert client is analytics.client
            assert client.queue_path == tmp_path / "flask.sqlite3"
            assert client.flush()
    finally:
        with app.app_context():
            analytics.client.shutdown(timeout=0)
    (message,) = collector.messages
    assert message["messageId"] == message_id
    assert message["context"]["page"]["path"] == "/"
    assert collector.requests[0].write_key == "flask-key"


def test_flask_login_user_is_used_when_the_app_has_flask_login(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    flask_login = pytest.importorskip("flask_login")

    class User(flask_login.UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    client = make_client()
    app = flask.Flask("login")
    app.secret_key = "test-only"
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)
    DurableAnalytics(app)

    @app.route("/login")
    def login() -> str:
        flask_login.login_user(User("login-7"))
        return "ok"

    app.add_url_rule("/", "i", lambda: client.track(None, "E", anonymous_id="a").message_id)
    http = app.test_client()
    before = http.get("/").text
    http.get("/login")
    after = http.get("/").text
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    assert "userId" not in by_id[before]
    assert by_id[after]["userId"] == "login-7"
