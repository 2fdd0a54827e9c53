"""The delivery loop: lease batches, upload them in parallel, settle every message by the answer.

One :class:`Worker` serves a client's background thread, a ``sync_mode`` call and the
``durable-analytics drain`` command alike. It decides nothing itself: *when* to send is
:func:`~durable_analytics.policy.schedule`, *what an answer means* and *how long to wait* are
:func:`~durable_analytics.policy.decide`; the worker leases, sends and applies. It holds no
messages in memory between batches: the queue file is the only state, so a process may die at
any line and the next taker, in this process or another, carries on from what the file says.

A dispatcher (the background thread, or the caller's thread in ``deliver_until``) starts each
upload in a thread of its own, up to ``max_in_flight`` at once, each under its own lease.
The settling of one batch is in upload.py, the waits of a flush in waiting.py.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Set, Tuple

from .deadline import LEASE_MARGIN, check_lease, lease_for
from .errors import ConfigError
from .limits import MAX_REQUEST_BYTES
from .policy import (
    BREAKER_AFTER,
    DEFAULT_MAX_IN_FLIGHT,
    RetryPolicy,
    batch_limits,
    schedule,
    wait_left,
)
from .store import Lease, MessageStore
from .transport import Transport, envelope_overhead
from .upload import BatchUploader, DeliveryCallback, ErrorCallback, Totals
from .waiting import POLL, DeliveryWaits

__all__ = ["Worker", "Totals", "ErrorCallback", "DeliveryCallback", "DEFAULT_MAX_IN_FLIGHT"]

log = logging.getLogger("durable_analytics")


class Worker(BatchUploader, DeliveryWaits):
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
        self._started = 0  # uploads ever counted in flight (see ``uploads_seen``)
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

    def uploads_seen(self) -> Tuple[int, int]:
        """``(uploads on the wire now, uploads counted so far)``: the same value read twice
        means that no upload started in between."""
        with self._lock:
            return len(self._uploads), self._started

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
        probe_at = now if self._tripped else None
        upload = self._new_upload(lease, probe_at)  # in flight before the probe holds others
        if probe_at is not None and not self.store.claim_probe(
            probe_at, self.lease_seconds, BREAKER_AFTER
        ):
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
            return POLL, "backoff"
        upload.start()
        return 0.0, "sent"

    def _blocked_for(self, now: float) -> float:
        """What is left of the file's breaker (bounded by the policy's cap whatever the clock
        did since it was stored) or of this process's pause."""
        state = self.store.breaker(now)
        self._tripped = state.failures >= BREAKER_AFTER
        breaker = wait_left(state.retry_at, state.opened, now, self.policy.cap)
        return max(breaker, self._paused_until - now)

    def _new_upload(self, lease: Lease, probe_at: Optional[float]) -> threading.Thread:
        """The thread that will upload ``lease`` (the breaker's probe claimed at ``probe_at``,
        if not None), counted in flight from now on."""
        thread = threading.Thread(
            target=self._upload,
            args=(lease, probe_at),
            name="durable-analytics-upload",
            daemon=True,
        )
        with self._lock:
            self._uploads.add(thread)
            self._started += 1
        return thread

    def _upload(self, lease: Lease, probe_at: Optional[float]) -> None:
        try:
            self.deliver(lease)
            if probe_at is not None:  # unless its answer settled the breaker, let others probe
                self.store.end_probe(probe_at, self.lease_seconds)
            self.store.maintain()
        except Exception:
            self._report_failure()
        finally:
            with self._lock:
                self._uploads.discard(threading.current_thread())
            self._wake.set()
            self._notify_progress()
