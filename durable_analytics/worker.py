"""The delivery loop: lease batches, upload them in parallel, settle every message by the answer.

One :class:`Worker` serves a client's background thread, a ``sync_mode`` call and the
``durable-analytics drain`` command alike. It decides nothing itself: *when* to send is
:func:`~durable_analytics.policy.schedule`, *what an answer means* and *how long to wait* are
:func:`~durable_analytics.policy.decide`; the worker leases, sends and applies. It holds no
messages in memory between batches: the queue file is the only state, so a process may die at
any line and the next taker, in this process or another, carries on from what the file says.

A dispatcher (the background thread, or the caller's thread in ``deliver_until``) starts each
upload in a thread of its own, up to ``max_in_flight`` at once, each under its own lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import tenacity

from .deadline import LEASE_MARGIN, check_lease, lease_for
from .errors import ConfigError, RejectedError
from .limits import MAX_REQUEST_BYTES
from .policy import (
    BREAKER_AFTER,
    DEFAULT_MAX_IN_FLIGHT,
    Action,
    Decision,
    Kind,
    RetryPolicy,
    batch_limits,
    decide,
    give_up_rule,
    next_concurrency,
    schedule,
    wait_left,
)
from .store import Lease, MessageStore, Row
from .transport import Outcome, Transport, envelope_overhead

__all__ = ["Worker", "Totals", "ErrorCallback", "DeliveryCallback", "DEFAULT_MAX_IN_FLIGHT"]

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
    last_status: Optional[int] = None  # of the last failed request (None: a network error)
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
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.transport = transport
        self.policy = policy
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_batch_messages, max_bytes = batch_limits(max_batch_messages, max_batch_bytes)
        self.byte_budget = max_bytes - envelope_overhead()
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
        self.max_in_flight = max(1, int(max_in_flight))
        self.clock = clock
        self.owner = store.new_owner()
        self.totals = Totals()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._lock = threading.Lock()  # guards totals, the upload set and the slot count
        self._uploads: Set[threading.Thread] = set()
        self._slots = self.max_in_flight  # lowered by 429s, raised again by successes
        self._flushers = 0
        self._appended = 0
        # Appends wake the thread only while it waits for messages: not in a backoff, nor while
        # a partial batch lingers (it would wake on every call and read the file for nothing).
        self._wake_on_append = True
        self._thread: Optional[threading.Thread] = None
        self._paused_until = 0.0  # a configuration error pauses this process only
        self._last_send = 0.0
        self._full_batch = False  # more are waiting: the next cycle leases without counting
        self._tripped = False  # the breaker opened and may let one probe through
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

    @property
    def in_flight(self) -> int:
        """Uploads on the wire now."""
        with self._lock:
            return len(self._uploads)

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop the thread, interrupting any backoff wait; True if it ended in time.

        Uploads on the wire are waited for past ``timeout`` (at most one request's deadline):
        abandoning one would leave a batch the server may have accepted to be sent again by
        the next taker. No new batch, nor a further part of a split batch, is started once
        stop is asked.
        """
        self.request_stop()
        longest = self.transport.max_seconds() + LEASE_MARGIN
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():  # woken from any wait, it settles its uploads, then ends
                thread.join(longest)
        self.settle(longest)  # uploads started from the caller's thread (deliver_until)
        return thread is None or not thread.is_alive()

    def request_stop(self) -> None:
        """Ask the thread to stop after the uploads in flight, without waiting for them."""
        self._stop.set()
        self._wake.set()

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the uploads on the wire; True if none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                uploads = [t for t in self._uploads if t is not threading.current_thread()]
            if not uploads:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if uploads[0].ident is None:  # counted, about to start
                time.sleep(min(remaining, 0.005))
            else:
                uploads[0].join(remaining)

    @property
    def _due_count(self) -> int:
        """How many waiting messages make a batch due (see ``policy.schedule``)."""
        return min(self.flush_at, self.max_batch_messages)

    def notify_append(self, count: int = 1) -> None:
        """Called after local appends: wake the thread once a batch is due by count."""
        self._appended += count
        if self._appended >= self._due_count and self._wake_on_append and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        log.debug(
            "worker started (flush_at=%d, flush_interval=%gs, max_in_flight=%d)",
            self.flush_at,
            self.flush_interval,
            self.max_in_flight,
        )
        while not self._stop.is_set():
            try:
                delay, _ = self.cycle(force=self._flushers > 0)
            except Exception:
                self._report_failure()
                delay = min(self.flush_interval, 1.0)
            self._notify_progress()
            if delay > 0:
                self.idle(delay)
        # The thread lives while its uploads do, so "the thread is alive" means "on the wire".
        self.settle(self.transport.max_seconds() + LEASE_MARGIN)
        log.debug("worker stopped")

    def idle(self, delay: float) -> None:
        """Wait ``delay`` seconds, or until an append, an upload's end or stop wakes us."""
        if self._wake.wait(delay):
            self._wake.clear()

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
    # One scheduling step

    def cycle(self, force: bool = False) -> Tuple[float, str]:
        """Start one upload if one is due; return how long to wait before the next step.

        The reason is ``"sent"`` (go on at once), ``"busy"`` (every upload slot is taken, or
        nothing else is ready while our uploads run),
        ``"backoff"`` (the file's breaker or this process's pause has not ended),
        ``"waiting"`` (fewer than ``flush_at``, younger than ``flush_interval``), ``"linger"``
        (a due partial batch fills up a little) or ``"idle"`` (nothing ready; other takers,
        or our own uploads, hold leases).
        """
        now = self.clock()
        self._wake_on_append = False
        with self._lock:
            in_flight, slots = len(self._uploads), self._slots
        if in_flight >= slots:
            return self.flush_interval, "busy"
        appended = self._appended
        if self._full_batch:  # the last lease was full: no need to count what is waiting
            count, oldest = self.max_batch_messages, None
        else:
            count, oldest = self.store.ready_summary(self.max_batch_messages)
        # Appends from now on wake the thread once flush_at are waiting (an append during the
        # read may be counted twice: that only wakes it early).
        self._appended = count + self._appended - appended
        expiry = None
        if count == 0:
            if in_flight:  # our own uploads hold the leases: the end of one wakes us
                self._wake_on_append = True
                if self._appended >= self._due_count:
                    return 0.0, "sent"
                return self.flush_interval, "busy"
            self.store.maintain(idle=True)  # give back what the last batches freed
            expiry = self.store.next_lease_expiry()
            if expiry is not None and self.store.reclaim(now):  # a dead taker's batch
                return 0.0, "sent"
        plan = schedule(
            now=now,
            ready=count,
            oldest=oldest,
            flush_at=self.flush_at,
            flush_interval=self.flush_interval,
            batch_messages=self.max_batch_messages,
            linger=self.linger,
            last_send=self._last_send,
            force=force,
            blocked_for=self._blocked_for(now),
            in_flight=in_flight,
            slots=slots,
            next_expiry=expiry,
        )
        if plan.reason == "reclaim":
            self.store.reclaim(now)
            return 0.0, "sent"
        if plan.reason == "backoff":
            self.store.maintain(idle=True)  # appends go on: keep the WAL bounded
        if plan.wait > 0:
            self._wake_on_append = plan.reason in ("idle", "waiting")
            if self._wake_on_append and self._appended >= self._due_count:
                return 0.0, "sent"  # enough arrived while we looked: look again at once
            return plan.wait, plan.reason
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
        if lease is None:
            return 0.0, "sent"
        upload = self._new_upload(lease)  # counted in flight before the probe holds others back
        if self._tripped and not self.store.claim_probe(now, self.lease_seconds, BREAKER_AFTER):
            # Another taker sends the one probe of the half-open breaker: give the batch back.
            with self._lock:
                self._uploads.discard(upload)
            self.store.release(
                self.owner,
                lease.ids,
                error="another taker sends the probe of the open breaker",
                retry_at=None,
                count_failure=False,
            )
            return _POLL, "backoff"
        upload.start()
        return 0.0, "sent"

    def _blocked_for(self, now: float) -> float:
        """What is left of the file's breaker (bounded by the policy's cap whatever the clock
        did since it was stored) or of this process's pause."""
        state = self.store.breaker(now)
        self._tripped = state.failures >= BREAKER_AFTER
        breaker = wait_left(state.retry_at, state.opened, now, self.policy.cap)
        return max(breaker, self._paused_until - now)

    def _new_upload(self, lease: Lease) -> threading.Thread:
        """The thread that will upload ``lease``, counted in flight from now on."""
        thread = threading.Thread(
            target=self._upload, args=(lease,), name="durable-analytics-upload", daemon=True
        )
        with self._lock:
            self._uploads.add(thread)
        return thread

    def _upload(self, lease: Lease) -> None:
        try:
            self.deliver(lease)
            self.store.maintain()
        except Exception:
            self._report_failure()
        finally:
            with self._lock:
                self._uploads.discard(threading.current_thread())
            self._wake.set()
            self._notify_progress()

    # ----------------------------------------------------------------------------------------
    # One batch

    def deliver(self, lease: Lease) -> None:
        """Upload a leased batch and settle each message: ack, split, release or dead-letter.

        The stored JSON is sent as it is, never parsed on the way (a row that somehow is not
        JSON makes the server answer 400, and the split isolates it). Before each further
        request of a split the lease is extended, and nothing more is sent once stop is asked
        or the lease was lost: the rest goes back to the file for the next taker.
        """
        segments: List[List[Row]] = [list(lease.rows)]
        first = True
        while segments:
            if not first and not self._still_ours(segments):
                return
            first = False
            segment = segments.pop()
            sent_at = self.clock()
            outcome = self.transport.send([row.data for row in segment])
            self._count(outcome)
            decision = self._decide(outcome, segment)
            if decision.action is Action.ACK:
                self._ack(segment, outcome, sent_at)
            elif decision.action is Action.SPLIT:
                middle = len(segment) // 2
                segments += [segment[middle:], segment[:middle]]
            elif decision.action is Action.DEAD_LETTER:
                self._dead_letter(segment, outcome)
            else:
                rest = segment + [row for part in segments for row in part]
                segments.clear()
                self._retry_later(rest, outcome, decision, sent_at)

    def _still_ours(self, segments: List[List[Row]]) -> bool:
        """Before a further request of a split: extend the lease, or give the rest back."""
        ids = [row.id for part in segments for row in part]
        if self._stop.is_set():
            self.store.release(self.owner, ids, error="stopped", retry_at=None, count_failure=False)
            return False
        held = self.store.extend(self.owner, ids, self.lease_seconds, now=self.clock())
        if held < len(ids):
            log.warning("lost the lease of a batch being split; its other taker carries on")
            return False
        return True

    def _decide(self, outcome: Outcome, segment: List[Row]) -> Decision:
        failing = outcome.kind in (Kind.TRANSIENT, Kind.RATE_LIMITED)
        decision = decide(
            outcome.kind,
            messages=len(segment),
            batch_failures=max(row.attempts for row in segment),
            file_failures=self.store.backoff().failures if failing else 0,
            retry_after=outcome.retry_after,
            now=self.clock(),
            policy=self.policy,
            pause=self.auth_pause,
        )
        with self._lock:
            self._slots = next_concurrency(self._slots, outcome.kind, self.max_in_flight)
        return decision

    def _ack(self, rows: List[Row], outcome: Outcome, sent_at: float) -> None:
        self.store.ack([row.id for row in rows], sent_at=sent_at)
        with self._lock:
            self.totals.delivered += len(rows)
        log.debug("delivered %d message(s) (%d bytes)", len(rows), outcome.wire_bytes)
        if self.on_delivery is not None:
            self._call(self.on_delivery, _parsed(rows))

    def _dead_letter(self, rows: List[Row], outcome: Outcome) -> None:
        self.store.dead_letter(
            self.owner, [row.id for row in rows], http_status=outcome.status, reason=outcome.reason
        )
        with self._lock:
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

    def _retry_later(
        self, rows: List[Row], outcome: Outcome, decision: Decision, sent_at: float
    ) -> None:
        now = self.clock()
        ids = [row.id for row in rows]
        pause = decision.action is Action.PAUSE
        if pause:
            self._paused_until = now + decision.pause
            log.error(
                "the server answered %s: sending is paused for %gs and %d message(s) are kept "
                "on disk. Check the endpoint and the write key.",
                outcome.reason,
                decision.pause,
                len(ids),
            )
        else:
            assert decision.retry_at is not None
            log.warning(
                "upload of %d message(s) failed (%s); kept on disk, retrying in %.1fs",
                len(ids),
                outcome.reason,
                decision.retry_at - now,
            )
        before, attempts = give_up_rule(now, self.policy, self.policy.cap + self.lease_seconds)
        _, dead = self.store.release(
            self.owner,
            ids,
            error=outcome.reason,
            retry_at=decision.breaker_until,
            wait_until=decision.retry_at,
            give_up_before=before,
            give_up_attempts=attempts,
            count_failure=decision.count_failure,
            sent_at=sent_at,
            now=now,
        )
        with self._lock:
            self.totals.failed_attempts += 1
            self.totals.dead += len(dead)
        self._report_retry(rows, outcome, dead, pause)

    def _report_retry(
        self, rows: List[Row], outcome: Outcome, dead: List[int], pause: bool
    ) -> None:
        """Tell ``on_error`` of the messages given up; log the ones still retried."""
        if dead:
            dead_set = set(dead)
            reason = f"retried for over {self.policy.max_retry_age:g}s: {outcome.reason}"
            log.error("dead-lettered %d message(s): %s", len(dead), reason)
            expired = [row for row in rows if row.id in dead_set]
            self._call(
                self.on_error, RejectedError(reason, status=outcome.status), _parsed(expired)
            )
        # on_error hears only of messages given up (dead-lettered, above): these are kept and
        # retried, and a handler that saves "lost" messages must not save them twice.
        exhausted = [row for row in rows if row.attempts + 1 == self.max_retries]
        if exhausted and not pause:
            log.warning(
                "%d message(s) not delivered after %d attempts (%s); still queued on disk and "
                "retried until max_retry_age",
                len(exhausted),
                self.max_retries,
                outcome.reason,
            )

    def _count(self, outcome: Outcome) -> None:
        key = str(outcome.status) if outcome.status is not None else "network"
        with self._lock:
            self.totals.requests += 1
            self.totals.wire_bytes += outcome.wire_bytes
            self.totals.statuses[key] = self.totals.statuses.get(key, 0) + 1
            if outcome.kind is not Kind.ACCEPTED:
                self.totals.last_error = outcome.reason
                self.totals.last_status = outcome.status

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
        """The breaker, or this process's pause, ends after the deadline."""
        return self.in_flight == 0 and self._blocked_for(self.clock()) > remaining

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
            sleep=sleep or self.idle,
            reraise=True,
        )
        with contextlib.suppress(_NotYet):  # out of time: what is left is counted below
            retrying(attempt)
        self.settle(max(0.0, deadline - time.monotonic()) + self.transport.max_seconds())
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
