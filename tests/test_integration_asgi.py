"""The ASGI middleware under Starlette and FastAPI, through their own test clients, against
the collector: request context in each message, and concurrent requests kept apart."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

pytest.importorskip("starlette")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient as FastAPITestClient  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.authentication import (  # noqa: E402
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
)
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.authentication import AuthenticationMiddleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from durable_analytics import Client  # noqa: E402
from durable_analytics.integrations.asgi import AnalyticsMiddleware  # noqa: E402
from durable_analytics.request_context import current  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: Any) -> Any:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def starlette_app(client: Client) -> Starlette:
    async def buy(request: Request) -> PlainTextResponse:
        message_id = client.track(None, "Bought", anonymous_id="anon-1").message_id
        return PlainTextResponse(str(message_id))

    return Starlette(
        routes=[Route("/shop/buy", buy)],
        middleware=[
            Middleware(AnalyticsMiddleware),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
        ],
    )


def test_starlette_request_context_reaches_the_collector(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    client = make_client()
    with TestClient(starlette_app(client), base_url="https://shop.test") as http:
        response = http.get(
            "/shop/buy?item=7",
            headers={"user-agent": "Browser/1.0", "referer": "https://ref.test/", "x-user": "ann"},
        )
        assert response.status_code == 200
        anonymous = http.get("/shop/buy", headers={"user-agent": "Bot/2"})
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    message = by_id[response.text]
    assert message["userId"] == "ann"
    assert message["context"]["ip"] == "testclient"
    assert message["context"]["userAgent"] == "Browser/1.0"
    assert message["context"]["page"] == {
        "url": "https://shop.test/shop/buy?item=7",
        "path": "/shop/buy",
        "referrer": "https://ref.test/",
        "search": "?item=7",
    }
    other = by_id[anonymous.text]
    assert "userId" not in other and other["anonymousId"] == "anon-1"
    assert other["context"]["userAgent"] == "Bot/2"
    assert current() is None


def test_fastapi_sync_and_async_endpoints(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    client = make_client()
    app = FastAPI()
    app.add_middleware(AnalyticsMiddleware, user_id=lambda scope: scope["headers"] and "u-9")

    @app.get("/async")
    async def in_loop() -> dict:
        return {"id": client.page(None, name="Async", context={"locale": "fr"}).message_id}

    @app.get("/sync")
    def in_thread() -> dict:  # FastAPI runs it in a thread pool, in a copy of the context
        return {"id": client.track(None, "Sync").message_id}

    with FastAPITestClient(app) as http:
        ids = [http.get(path).json()["id"] for path in ("/async", "/sync")]
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    first, second = (by_id[i] for i in ids)
    assert first["userId"] == second["userId"] == "u-9"
    assert first["context"]["locale"] == "fr"
    assert first["context"]["page"]["path"] == "/async"
    assert second["context"]["page"]["path"] == "/sync"


def test_concurrent_requests_never_see_each_others_context(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    """All requests are inside the app at once (a barrier) before any of them records."""
    client = make_client(flush_at=1000)
    count = 25
    arrived = 0
    everyone_in = asyncio.Event()

    async def handler(request: Request) -> PlainTextResponse:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone_in.set()
        await everyone_in.wait()
        await asyncio.sleep(0)
        message_id = client.track(None, "Seen", {"n": request.query_params["n"]}).message_id
        return PlainTextResponse(message_id)

    app = AnalyticsMiddleware(
        Starlette(routes=[Route("/r", handler)]),
        user_id=lambda scope: dict(scope["headers"])[b"x-user"].decode(),
    )

    async def run() -> list:
        transport = httpx.ASGITransport(app=app, client=("10.1.1.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
            return await asyncio.gather(
                *(
                    http.get(f"/r?n={n}", headers={"user-agent": f"UA-{n}", "x-user": f"user-{n}"})
                    for n in range(count)
                )
            )

    responses = asyncio.run(run())
    assert arrived == count
    assert client.flush()
    by_id = {m["messageId"]: m for m in collector.messages}
    for response in responses:
        message = by_id[response.text]
        n = message["properties"]["n"]
        assert message["userId"] == f"user-{n}"
        assert message["context"]["userAgent"] == f"UA-{n}"
        assert message["context"]["page"]["search"] == f"?n={n}"
        assert message["context"]["ip"] == "10.1.1.1"
