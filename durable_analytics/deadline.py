"""A total deadline for one HTTP request: connect, send and the whole answer together.

``requests`` (through urllib3) bounds each socket operation, not the request: a server that
answers one byte at a time, each within the read timeout, keeps a request alive for as long
as it likes, longer than the lease that reserves its batch and longer than any shutdown
bound. The only thing that ends a blocked socket call from outside is the socket itself, so
a watchdog thread shuts down the connection's socket when the deadline passes; the blocked
call then fails at once and the request ends as a network error.

The connection is found through urllib3's extension points: the pool classes of a
``PoolManager`` and the ``ConnectionCls`` of a pool. A connection registers its sockets with
the cutoff of the request running in its thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any, List, Optional, Tuple

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Cutoff", "DeadlineAdapter", "cutoff", "lease_for", "check_lease", "LEASE_MARGIN"]

_current = threading.local()

#: How much longer than its request a lease lasts at least: time to build the body before
#: the request and to write the settlement after it.
LEASE_MARGIN = 1.0
_DEFAULT_LEASE_MARGIN = 15.0
_DEFAULT_LEASE_FLOOR = 30.0


def lease_for(deadline: float) -> float:
    """The default lease for requests of this deadline: comfortably longer than one."""
    return max(_DEFAULT_LEASE_FLOOR, deadline + _DEFAULT_LEASE_MARGIN)


def check_lease(lease_seconds: float, deadline: float) -> Optional[str]:
    """Why ``lease_seconds`` is too short for requests of ``deadline`` (None if it is not):
    a lease that can expire while its request runs lets a second taker send the same batch."""
    if lease_seconds >= deadline + LEASE_MARGIN:
        return None
    return (
        f"lease_seconds={lease_seconds:g} must be at least the request deadline "
        f"({deadline:g}s, from timeout) plus {LEASE_MARGIN:g}s: raise it, or lower timeout"
    )


class Cutoff:
    """The deadline of one request; ``fired`` once the watchdog cut its connection."""

    __slots__ = ("deadline", "fired", "done", "_sockets", "_lock")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self.done = False
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: Optional[socket.socket]) -> None:
        """Cut ``sock`` at the deadline (at once if it has passed)."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _cut(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _cut(sock)

    def __enter__(self) -> Cutoff:
        _current.cutoff = self
        _WATCHDOG.arm(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self.done = True
            self._sockets.clear()
        _current.cutoff = None


def cutoff(seconds: float) -> Cutoff:
    """``with cutoff(seconds):`` around a request on a session using :class:`DeadlineAdapter`."""
    return Cutoff(seconds)


def _cut(sock: socket.socket) -> None:
    """Shut the socket down under the thread blocked on it (the plain socket's method, so
    that a TLS socket's wrapper state is left to the thread that owns it)."""
    with contextlib.suppress(OSError):  # already closed: nothing left to cut
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch_socket(sock: Optional[socket.socket]) -> None:
    active: Optional[Cutoff] = getattr(_current, "cutoff", None)
    if active is not None:
        active.watch(sock)


class _Watchdog:
    """One daemon thread that fires cutoffs at their deadlines (restarted after a fork)."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self.reset()

    def reset(self) -> None:
        """A forked child has no watchdog thread, and the lock may have been held at the fork."""
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, Cutoff]] = []
        self._pid = 0

    def arm(self, item: Cutoff) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use in this process
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, name="durable-analytics-deadline", daemon=True
                ).start()
            heapq.heappush(self._heap, (item.deadline, next(self._order), item))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                due = heapq.heappop(self._heap)[2]
            due.fire()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


class _Watched:
    """Registers the connection's socket with the request's cutoff: the new socket (the
    connect), the connected one (a TLS socket is a new object), and a kept-alive one when it
    is reused. During a TLS handshake neither object can be cut (the plain socket has handed
    its descriptor over): the handshake is bounded by the connect timeout of each read."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch_socket(sock)
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_socket(getattr(self, "sock", None))

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_socket(getattr(self, "sock", None))
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through an HTTP proxy) obey :func:`cutoff`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme") and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
