"""Settling one leased batch: send it, then ack, split, release or dead-letter by the answer.

Apart from the dispatcher (worker.py) because what happens to one batch once it is on the wire
is its own concept: the dispatcher chooses *when* a batch goes; this applies what
:func:`~durable_analytics.policy.decide` makes of the answer to every message of the batch,
counts it in :class:`Totals` and tells the callbacks.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import RejectedError
from .policy import Action, Decision, Kind, RetryPolicy, decide, give_up_rule, next_concurrency
from .store import Lease, MessageStore, Row
from .transport import Outcome, Transport

__all__ = ["BatchUploader", "Totals", "ErrorCallback", "DeliveryCallback"]

log = logging.getLogger("durable_analytics")

ErrorCallback = Callable[[Exception, List[Dict[str, Any]]], Any]
DeliveryCallback = Callable[[List[Dict[str, Any]]], Any]


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


class BatchUploader:
    """The part of :class:`~durable_analytics.worker.Worker` that uploads and settles a batch
    (a mixin: the attributes named below are the worker's)."""

    store: MessageStore
    transport: Transport
    policy: RetryPolicy
    owner: str
    lease_seconds: float
    max_retries: int
    auth_pause: float
    max_in_flight: int
    on_error: Optional[ErrorCallback]
    on_delivery: Optional[DeliveryCallback]
    clock: Callable[[], float]
    totals: Totals
    _stop: threading.Event
    _lock: threading.Lock
    _slots: int
    _paused_until: float

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


def _parsed(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    """The messages of ``rows`` for a callback; a row that is not JSON comes as {"raw": text}."""
    messages = []
    for row in rows:
        try:
            messages.append(json.loads(row.data))
        except ValueError:
            messages.append({"raw": row.data})
    return messages
