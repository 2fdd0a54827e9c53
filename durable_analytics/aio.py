"""``AsyncClient``: the same client for asyncio code, without blocking the event loop.

It wraps a :class:`~durable_analytics.Client` (same arguments, same queue file, same
guarantees) and decides only *where* each operation runs. A call commits its message to the
queue file before the await returns (``durability="buffered"``: hands it to the committer).
With ``durability="normal"`` that commit is a local append, done in the loop's own thread (a
thread hop would cost more than the append); with ``durability="full"`` (an fsync per commit)
or ``sync_mode=True`` (HTTP in the call) it runs in a worker thread. ``flush``/``shutdown``
always wait in a thread, bounded by their timeout.

Cancelling a task that awaits ``flush`` cancels the wait, not the delivery: the messages stay
in the queue file and the background worker goes on delivering them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Optional

from .client import Client

__all__ = ["AsyncClient"]


def _call(name: str) -> Callable[..., Any]:
    """An async method that runs ``Client.<name>`` where it does not block the loop."""
    method = getattr(Client, name)

    async def call(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.client, name)
        if self.blocking_calls:
            return await asyncio.to_thread(bound, *args, **kwargs)
        return bound(*args, **kwargs)

    functools.update_wrapper(call, method)
    return call


class AsyncClient:
    """``await client.track(...)``: ``Client``'s six calls, ``enqueue``, ``flush`` and
    ``shutdown`` as coroutines. ``client`` is the wrapped :class:`Client`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = Client(*args, **kwargs)
        config = self.client.config
        #: Whether a call may wait on more than a local append (fsync or HTTP): then it runs
        #: in a thread. Context variables (request context) are carried into that thread.
        self.blocking_calls = bool(
            config.send and (config.sync_mode or config.durability == "full")
        )

    identify = _call("identify")
    track = _call("track")
    page = _call("page")
    screen = _call("screen")
    group = _call("group")
    alias = _call("alias")
    enqueue = _call("enqueue")

    async def flush(self, timeout: Optional[float] = None) -> bool:
        """``Client.flush`` awaited in a thread; bounded by ``timeout`` (``flush_timeout``)."""
        return await asyncio.to_thread(self.client.flush, timeout)

    async def shutdown(self, timeout: Optional[float] = None) -> bool:
        """``Client.shutdown`` awaited in a thread; bounded like it."""
        return await asyncio.to_thread(self.client.shutdown, timeout)

    close = shutdown

    async def stats(self) -> Any:
        """``Client.stats`` (a read of the queue file) in a thread."""
        return await asyncio.to_thread(self.client.stats)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"Async{self.client!r}"
