"""``AsyncClient`` under a real event loop against the collector: the calls, where they run,
a flush that leaves the loop free, and a task cancelled in the middle of a flush."""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any, List

import pytest
from conftest import client_settings

from durable_analytics import Client
from durable_analytics.aio import AsyncClient
from durable_analytics.request_context import RequestContext, bound
from durable_analytics.testing import Collector


@pytest.fixture
def make_async(collector: Collector, queue_file: Path) -> Any:
    made: List[AsyncClient] = []

    def make(**options: Any) -> AsyncClient:
        client = AsyncClient("test-key", **client_settings(collector, queue_file, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.client.shutdown(timeout=0)


def test_signatures_are_the_clients() -> None:
    for name in ("identify", "track", "page", "screen", "group", "alias", "enqueue"):
        ours = getattr(AsyncClient, name)
        assert inspect.iscoroutinefunction(ours)
        assert inspect.signature(ours) == inspect.signature(getattr(Client, name))


def test_the_six_calls_are_delivered(make_async: Any, collector: Collector) -> None:
    async def main() -> list:
        async with make_async() as client:
            ids = [
                await client.identify("u", {"plan": "pro"}),
                await client.track("u", "Played", {"n": 1}),
                await client.page("u", "Docs", "Intro"),
                await client.screen("u", "App", "Home"),
                await client.group("u", "g-1", {"size": 3}),
                await client.alias("old", "u"),
            ]
            assert await client.flush()
            assert (await client.stats()).ready == 0
        return ids

    results = asyncio.run(main())
    assert all(result.success for result in results)
    assert [m["messageId"] for m in collector.messages] == [r.message_id for r in results]
    assert [m["type"] for m in collector.messages] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    ]


@pytest.mark.parametrize("options, in_loop", [({}, True), ({"durability": "full"}, False)])
def test_where_a_call_runs(
    make_async: Any, collector: Collector, options: dict, in_loop: bool
) -> None:
    """A local append stays in the loop's thread; an fsync goes to a thread, carrying the
    caller's context variables (the request context) with it."""
    seen = []

    def user() -> str:
        seen.append(threading.get_ident())
        return "ctx-user"

    async def main() -> Any:
        client = make_async(**options)
        with bound(RequestContext(path="/async", user_id=user)):
            message_id = (await client.track(None, "E")).message_id
        assert await client.flush()
        return threading.get_ident(), message_id

    loop_thread, message_id = asyncio.run(main())
    assert (seen == [loop_thread]) is in_loop
    (message,) = collector.messages
    assert message["messageId"] == message_id
    assert message["userId"] == "ctx-user"
    assert message["context"]["page"] == {"path": "/async"}


def test_flush_leaves_the_loop_free_and_is_bounded(make_async: Any, collector: Collector) -> None:
    collector.set_default(503)

    async def main() -> tuple:
        client = make_async()
        await client.track("u", "E")
        ticks = 0
        flush = asyncio.ensure_future(client.flush(timeout=0.5))
        while not flush.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return await flush, ticks

    delivered, ticks = asyncio.run(main())
    assert delivered is False
    assert ticks > 1  # other tasks ran while flush waited


def test_cancelled_mid_flush_the_messages_stay_and_are_delivered_later(
    make_async: Any, collector: Collector
) -> None:
    collector.set_default(503)

    async def main() -> None:
        client = make_async()
        ids = {(await client.track("u", "E", {"n": n})).message_id for n in range(5)}
        flush = asyncio.ensure_future(client.flush(timeout=30))
        while not collector.requests:  # the flush is on the wire, being refused
            await asyncio.sleep(0.01)
        flush.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flush
        stats = await client.stats()
        assert stats.ready + stats.leased == 5
        assert collector.messages == []
        collector.set_default(None)
        assert await client.flush()
        assert {m["messageId"] for m in collector.messages} == ids
        await client.shutdown()

    asyncio.run(main())
