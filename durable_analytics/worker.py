"""The delivery loop: lease a batch, upload it, and settle every message by the answer.

One :class:`Worker` serves a client's background thread, a ``sync_mode`` call and the
``durable-analytics drain`` command alike. It holds no messages in memory between cycles:
the queue file is the only state, so a process may die at any line and the next taker, in
this process or another, carries on from what the file says.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import tenacity

from .deadline import LEASE_MARGIN, check_lease, lease_for
from .errors import AuthError, ConfigError, RejectedError, TransientError
from .limits import MAX_REQUEST_BYTES
from .retry import RetryPolicy
from .store import Lease, MessageStore, Row
from .transport import Kind, Outcome, Transport, envelope_overhead

__all__ = ["Worker", "Totals", "ErrorCallback", "DeliveryCallback"]

log = logging.getLogger("durable_analytics")

ErrorCallback = Callable[[Exception, List[Dict[str, Any]]], Any]
DeliveryCallback = Callable[[List[Dict[str, Any]]], Any]

_POLL = 0.1  # how often a waiter re-reads the file for other processes' progress


@dataclass
class Totals:
    """What this worker did, for summaries and tests."""

    delivered: int = 0
    dead: int = 0
    failed_attempts: int = 0
    requests: int = 0
    wire_bytes: int = 0
    last_error: Optional[str] = None
    statuses: Dict[str, int] = field(default_factory=dict)


class _NotYet(Exception):
    """Internal: messages are still pending; wait ``delay`` seconds before looking again."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class Worker:
    """Turns the disk queue into accepted batches, following the wire contract."""

    def __init__(
        self,
        store: MessageStore,
        transport: Transport,
        *,
        policy: RetryPolicy,
        flush_at: int = 20,
        flush_interval: float = 5.0,
        max_batch_messages: int = 500,
        max_batch_bytes: int = MAX_REQUEST_BYTES,
        lease_seconds: Optional[float] = None,
        max_retries: int = 10,
        auth_pause: float = 300.0,
        on_error: Optional[ErrorCallback] = None,
        on_delivery: Optional[DeliveryCallback] = None,
        linger: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.transport = transport
        self.policy = policy
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_batch_messages = max_batch_messages
        self.byte_budget = max_batch_bytes - envelope_overhead()
        deadline = transport.max_seconds()
        self.lease_seconds = lease_for(deadline) if lease_seconds is None else lease_seconds
        too_short = check_lease(self.lease_seconds, deadline)
        if too_short:
            raise ConfigError(too_short)
        self.max_retries = max_retries
        self.auth_pause = auth_pause
        self.on_error = on_error
        self.on_delivery = on_delivery
        self.linger = linger
        self.clock = clock
        self.owner = store.new_owner()
        self.totals = Totals()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._flushers = 0
        self._appended = 0
        # Appends wake the thread only while it waits for messages: not in a backoff, nor while
        # a partial batch lingers (it would wake on every call and read the file for nothing).
        self._wake_on_append = True
        self._thread: Optional[threading.Thread] = None
        self._paused_until = 0.0  # a refused write key pauses this process only
        self._last_send = 0.0
        self._full_batch = False  # more are waiting: the next cycle leases without counting
        self._last_failure_log = -60.0

    # ----------------------------------------------------------------------------------------
    # Background thread

    def start(self) -> None:
        """Start the daemon thread that delivers in the background."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="durable-analytics-worker", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop the thread, interrupting any backoff wait; True if it ended in time.

        A batch being uploaded is waited for past ``timeout`` (at most the HTTP timeout):
        abandoning it would leave a batch the server may have accepted to be sent again by
        the next taker. No new batch is started once stop is asked.
        """
        self.request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                # Woken from any wait, the thread is inside a cycle: let it settle its batch.
                thread.join(self.transport.max_seconds() + LEASE_MARGIN)
            return not thread.is_alive()
        return True

    def request_stop(self) -> None:
        """Ask the thread to stop after the batch in flight, without waiting for it."""
        self._stop.set()
        self._wake.set()

    def notify_append(self, count: int = 1) -> None:
        """Called after local appends: wake the thread once ``flush_at`` are waiting."""
        self._appended += count
        if self._appended >= self.flush_at and self._wake_on_append and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        log.debug(
            "worker started (flush_at=%d, flush_interval=%gs)", self.flush_at, self.flush_interval
        )
        while not self._stop.is_set():
            try:
                delay, _ = self.cycle(force=self._flushers > 0)
            except Exception:
                self._report_failure()
                delay = min(self.flush_interval, 1.0)
            self._notify_progress()
            if delay > 0 and self._wake.wait(delay):
                self._wake.clear()
        log.debug("worker stopped")

    def _report_failure(self) -> None:
        """Log a failed cycle with its traceback once a minute, not on every retry (a full
        disk or a damaged file fails every cycle until someone acts)."""
        now = time.monotonic()
        if now - self._last_failure_log >= 60.0:
            self._last_failure_log = now
            log.exception("delivery cycle failed; the messages stay queued, trying again")
        else:
            log.debug("delivery cycle failed again", exc_info=True)

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # ----------------------------------------------------------------------------------------
    # One step

    def cycle(self, force: bool = False) -> Tuple[float, str]:
        """Send one batch if one is due; return how long to wait before the next step.

        The reason is ``"sent"`` (go on at once), ``"backoff"`` (the shared retry time has not
        come), ``"waiting"`` (fewer than ``flush_at`` messages, younger than
        ``flush_interval``) or ``"idle"`` (nothing ready; other takers may hold leases).
        """
        now = self.clock()
        self._wake_on_append = False
        retry_at = self._retry_at()
        if retry_at > now:
            self.store.maintain(idle=True)  # appends go on: keep the WAL bounded
            return retry_at - now, "backoff"
        if self._full_batch:  # the last lease was full: no need to count what is waiting
            count, oldest = self.max_batch_messages, None
        else:
            count, oldest = self.store.ready_summary(self.max_batch_messages)
        if count == 0:
            self._wake_on_append = True
            self.store.maintain(idle=True)  # give back what the last batches freed
            expiry = self.store.next_lease_expiry()
            if expiry is None:
                return self.flush_interval, "idle"
            if self.store.reclaim(now):
                return 0.0, "sent"
            return min(self.flush_interval, max(expiry - now, 0.01)), "idle"
        due = force or count >= self.flush_at or now - (oldest or now) >= self.flush_interval
        if not due:
            self._wake_on_append = True
            return max(0.01, (oldest or now) + self.flush_interval - now), "waiting"
        if not force and count < self.max_batch_messages and now < self._last_send + self.linger:
            # Under a steady stream, let a partial batch fill up a little: fewer, fuller
            # requests, and less of the callers' CPU spent on HTTP.
            return self._last_send + self.linger - now, "waiting"
        self._appended = 0
        self._last_send = now
        lease = self.store.lease(  # one small row written: see the store
            self.owner,
            max_messages=self.max_batch_messages,
            max_bytes=self.byte_budget,
            lease_seconds=self.lease_seconds,
            now=now,
        )
        self._full_batch = lease is not None and len(lease.rows) == self.max_batch_messages
        if lease is not None:
            self.deliver(lease)
            self.store.maintain()
        return 0.0, "sent"

    def deliver(self, lease: Lease) -> None:
        """Upload a leased batch and settle each message: ack, release or dead-letter.

        The stored JSON is sent as it is, never parsed on the way (a row that somehow is not
        JSON makes the server answer 400, and the split below isolates it). Messages are
        parsed only for the callbacks that want them.
        """
        segments: List[List[Row]] = [list(lease.rows)]
        while segments:
            segment = segments.pop()
            outcome = self.transport.send([row.data for row in segment])
            self._count(outcome)
            ids = [row.id for row in segment]
            if outcome.kind is Kind.ACCEPTED:
                self.store.ack(ids)
                self.totals.delivered += len(ids)
                log.debug("delivered %d message(s) (%d bytes)", len(ids), outcome.wire_bytes)
                if self.on_delivery is not None:
                    self._call(self.on_delivery, _parsed(segment))
            elif outcome.kind is Kind.SPLIT and len(segment) > 1:
                middle = len(segment) // 2
                segments += [segment[middle:], segment[:middle]]
                remaining = [row.id for part in segments for row in part]
                self.store.extend(self.owner, remaining, self.lease_seconds)
            elif outcome.kind in (Kind.SPLIT, Kind.REJECTED):
                self._dead_letter(segment, outcome)
            else:
                rest = segment + [row for part in segments for row in part]
                segments.clear()
                self._retry_later(rest, outcome)

    def _dead_letter(self, rows: List[Row], outcome: Outcome) -> None:
        self.store.dead_letter(
            self.owner, [row.id for row in rows], http_status=outcome.status, reason=outcome.reason
        )
        self.totals.dead += len(rows)
        log.error(
            "the server rejected %d message(s) (%s); they are kept as dead letters "
            "(`durable-analytics dead-letters list`)",
            len(rows),
            outcome.reason,
        )
        if self.on_error is not None:
            error = RejectedError(outcome.reason, status=outcome.status)
            self._call(self.on_error, error, _parsed(rows))

    def _retry_later(self, rows: List[Row], outcome: Outcome) -> None:
        now = self.clock()
        ids = [row.id for row in rows]
        auth = outcome.kind is Kind.AUTH
        if auth:
            wait = self.auth_pause
            self._paused_until = now + wait
            log.error(
                "the server refused the write key (%s): sending is paused for %gs and %d "
                "message(s) are kept on disk. Check the write key.",
                outcome.reason,
                wait,
                len(ids),
            )
        else:
            failures = self.store.backoff().failures + 1
            wait = self.policy.backoff(failures, outcome.retry_after)
            log.warning(
                "upload of %d message(s) failed (%s); kept on disk, retrying in %.1fs",
                len(ids),
                outcome.reason,
                wait,
            )
        _, dead = self.store.release(
            self.owner,
            ids,
            error=outcome.reason,
            retry_at=None if auth else now + wait,
            give_up_before=now - self.policy.max_retry_age,
            count_failure=not auth,
        )
        self.totals.failed_attempts += 1
        if dead:
            dead_set = set(dead)
            self.totals.dead += len(dead)
            reason = f"retried for over {self.policy.max_retry_age:g}s: {outcome.reason}"
            log.error("dead-lettered %d message(s): %s", len(dead), reason)
            expired = [row for row in rows if row.id in dead_set]
            self._call(
                self.on_error, RejectedError(reason, status=outcome.status), _parsed(expired)
            )
        if self.on_error is None:
            return
        if auth:
            self._call(
                self.on_error, AuthError(outcome.reason, status=outcome.status), _parsed(rows)
            )
            return
        exhausted = [row for row in rows if row.attempts + 1 == self.max_retries]
        if exhausted:
            error = TransientError(
                f"not delivered after {self.max_retries} attempts ({outcome.reason}); "
                "still queued on disk and retried",
                status=outcome.status,
                retry_after=outcome.retry_after,
            )
            self._call(self.on_error, error, _parsed(exhausted))

    def _count(self, outcome: Outcome) -> None:
        self.totals.requests += 1
        self.totals.wire_bytes += outcome.wire_bytes
        key = str(outcome.status) if outcome.status is not None else "network"
        self.totals.statuses[key] = self.totals.statuses.get(key, 0) + 1
        if outcome.kind is not Kind.ACCEPTED:
            self.totals.last_error = outcome.reason

    @staticmethod
    def _call(callback: Optional[Callable[..., Any]], *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("a durable-analytics callback raised; delivery goes on")

    # ----------------------------------------------------------------------------------------
    # Waiting for delivery

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
                    self._progress.wait(min(remaining, _POLL))
            return True
        finally:
            self._flushers -= 1

    def _hopeless(self, remaining: float) -> bool:
        """The backoff (shared, or this process's pause) ends after the deadline."""
        return self._retry_at() - self.clock() > remaining

    def _retry_at(self) -> float:
        """When this worker may send again: the file's shared backoff or this process's pause."""
        return max(self.store.backoff().retry_at, self._paused_until)

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
                    raise _NotYet(delay if reason == "backoff" else min(delay, _POLL))
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
            sleep=sleep or self._stop.wait,
            reraise=True,
        )
        try:
            return bool(retrying(attempt))
        except _NotYet:
            return not pending()


def _parsed(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    """The messages of ``rows`` for a callback; a row that is not JSON comes as {"raw": text}."""
    messages = []
    for row in rows:
        try:
            messages.append(json.loads(row.data))
        except ValueError:
            messages.append({"raw": row.data})
    return messages
