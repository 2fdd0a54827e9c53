"""Waiting for delivery: a flush that waits on the background thread, or sends in the caller's.

Apart from the dispatcher (worker.py) because waiting is the caller's side of delivery: how
long a ``flush()``, a ``sync_mode`` call or ``durable-analytics drain`` waits, and when waiting
is hopeless, while the dispatcher only decides when the next batch goes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Optional, Tuple, Union

import tenacity

from .store import MessageStore
from .transport import Transport

__all__ = ["DeliveryWaits", "POLL"]

POLL = 0.1  # how often a waiter re-reads the file for other processes' progress


class _NotYet(Exception):
    """Internal: messages are still pending; wait ``delay`` seconds before looking again."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class DeliveryWaits:
    """The part of :class:`~durable_analytics.worker.Worker` that waits until messages settle
    (a mixin: the attributes named below are the worker's)."""

    store: MessageStore
    transport: Transport
    clock: Callable[[], float]
    uploads_seen: Callable[[], Tuple[int, int]]
    cycle: Callable[..., Tuple[float, str]]
    idle: Callable[[float], None]
    settle: Callable[[float], bool]
    _blocked_for: Callable[[float], float]
    _stop: threading.Event
    _wake: threading.Event
    _progress: threading.Condition
    _flushers: int

    def flush_wait(self, pending: Callable[[], bool], timeout: float) -> bool:
        """With the thread running: make it send now, and wait until ``pending()`` is False
        (the messages a flush waits for are settled)."""
        deadline = time.monotonic() + timeout
        self._flushers += 1
        self._wake.set()
        try:
            with self._progress:
                while pending():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._hopeless(remaining):
                        return False
                    self._progress.wait(min(remaining, POLL))
            return True
        finally:
            self._flushers -= 1

    def _hopeless(self, remaining: float) -> bool:
        """The breaker, or this process's pause, ends after the deadline, with no upload of ours
        on the wire (it may be the probe, whose answer ends the hold it claimed at once).

        The file is read between two looks at our uploads: one that started in between may
        have claimed the hold just read, so that is no reason to give up yet.
        """
        before = self.uploads_seen()
        if before[0]:
            return False
        blocked = self._blocked_for(self.clock())
        return blocked > remaining and self.uploads_seen() == before

    def deliver_until(
        self,
        last_id: Union[int, Callable[[], bool]],
        timeout: float,
        *,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> bool:
        """In the caller's thread: send until every message up to ``last_id`` is settled (or
        until ``last_id()`` is False, when it is a function).

        Backoff waits are real (through tenacity, interruptible by :meth:`stop`) but never
        past ``timeout``. True when nothing waited for is waiting or in flight.
        """
        deadline = time.monotonic() + timeout
        if isinstance(last_id, int):
            through = last_id
            pending: Callable[[], bool] = lambda: self.store.pending_through(through)  # noqa: E731
        else:
            pending = last_id

        def attempt() -> bool:
            while pending():
                if self._stop.is_set():
                    return False
                delay, reason = self.cycle(force=True)
                if delay > 0:
                    raise _NotYet(delay if reason == "backoff" else min(delay, POLL))
            return True

        def wait(state: tenacity.RetryCallState) -> float:
            assert state.outcome is not None
            delay = state.outcome.exception().delay  # type: ignore[union-attr]
            return max(0.0, min(delay, deadline - time.monotonic()))

        def past_deadline(state: tenacity.RetryCallState) -> bool:
            return time.monotonic() >= deadline or (
                time.monotonic() + state.upcoming_sleep >= deadline and state.upcoming_sleep > 0
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_NotYet),
            wait=wait,
            stop=tenacity.stop_any(tenacity.stop_when_event_set(self._stop), past_deadline),
            sleep=sleep or self.idle,
            reraise=True,
        )
        with contextlib.suppress(_NotYet):  # out of time: what is left is counted below
            retrying(attempt)
        self.settle(max(0.0, deadline - time.monotonic()) + self.transport.max_seconds())
        return not pending()
