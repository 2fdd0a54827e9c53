"""``durable-analytics drain``: deliver everything a queue file holds, then exit."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from ..config import defaults
from ..limits import MAX_REQUEST_BYTES
from ..retry import RetryPolicy
from ..store import MessageStore
from .options import (
    ENV_ENDPOINT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUS_HELP,
    CommandError,
    add_command,
    positive_float,
    positive_int,
    resolve_endpoint,
    resolve_queue,
    resolve_write_key,
    setting,
    shared_options,
)
from .output import LOG_HANDLER, PROGRESS_EVERY, Progress, age, print_json, setup_logging
from .signals import stopping_on_signals

if TYPE_CHECKING:
    from ..transport import Transport

# transport.py (and with it requests) is imported only by the commands that send: stats and
# dead-letters start faster, which matters in monitoring checks run every minute.

OPTION_DEFAULTS = defaults()
# The client's defaults (config.py), so that a drain sends as an application would.
MAX_BATCH_MESSAGES = OPTION_DEFAULTS["max_batch_messages"]
HTTP_TIMEOUT = OPTION_DEFAULTS["timeout"]
_POLL = 0.1  # how often drain re-reads the file while other takers hold the leases


@dataclass
class DrainResult:
    """What one drain did, and what it left."""

    path: str
    delivered: int
    dead: int
    left: int
    elapsed: float
    requests: int
    failed_attempts: int
    last_error: Optional[str]
    stopped: str  # emptied | timeout | backoff | max-messages | interrupted
    retry_in: Optional[float]

    @property
    def emptied(self) -> bool:
        return self.left == 0

    def as_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "dry_run": False,
            "emptied": self.emptied,
            "delivered": self.delivered,
            "dead": self.dead,
            "left": self.left,
            "elapsed_seconds": round(self.elapsed, 3),
            "requests": self.requests,
            "failed_attempts": self.failed_attempts,
            "last_error": self.last_error,
            "stopped": self.stopped,
            "retry_in_seconds": None if self.retry_in is None else round(self.retry_in, 3),
        }

    def summary(self) -> str:
        line = (
            f"drain: delivered {self.delivered:,}, dead-lettered {self.dead:,}, "
            f"left {self.left:,}, elapsed {self.elapsed:.1f}s"
        )
        if self.left:
            why = {
                "timeout": "timed out",
                "backoff": f"the next retry, in {age(self.retry_in)}, is past --timeout",
                "max-messages": "--max-messages reached",
                "interrupted": "interrupted",
            }.get(self.stopped, self.stopped)
            line += f" ({why}"
            line += f"; last error: {self.last_error})" if self.last_error else ")"
        return line


def drain_queue(
    store: MessageStore,
    transport: Transport,
    *,
    timeout: float,
    max_messages: Optional[int] = None,
    policy: Optional[RetryPolicy] = None,
    progress: Optional[Progress] = None,
    stop: Optional[threading.Event] = None,
) -> DrainResult:
    """Deliver every message the file holds now (ids up to ``last_id()`` at the start).

    One more taker on the file: a :class:`Worker` driven cycle by cycle here, so that the
    deadline, ``max_messages`` and progress are the command's while leasing, batching, backoff
    and dead-lettering stay the library's. Messages appended meanwhile may ride along but are
    not waited for; other takers' leases are waited for (or reclaimed when they expire).
    Uploads run in parallel as in the library (one at a time under ``max_messages``).
    Setting ``stop`` ends the drain after the batches in flight, so no lease is left behind.
    """
    from ..worker import DEFAULT_MAX_IN_FLIGHT, Worker

    stop = stop or threading.Event()
    worker = Worker(
        store,
        transport,
        policy=policy or RetryPolicy(),
        flush_at=1,
        flush_interval=_POLL,
        max_batch_messages=MAX_BATCH_MESSAGES,
        max_batch_bytes=MAX_REQUEST_BYTES,
        # With a message budget, one batch at a time: none may be leased past the budget.
        max_in_flight=DEFAULT_MAX_IN_FLIGHT if max_messages is None else 1,
    )
    totals = worker.totals
    started = time.monotonic()
    deadline = started + timeout
    through = store.last_id()
    stopped: Optional[str] = None
    retry_in: Optional[float] = None
    try:
        while True:
            settled = totals.delivered + totals.dead
            remaining = deadline - time.monotonic()
            pending = store.pending_through(through)
            stopped = stop_reason(pending, stop.is_set(), settled, max_messages, remaining)
            if stopped is not None:
                break
            if max_messages is not None:
                worker.max_batch_messages = min(MAX_BATCH_MESSAGES, max_messages - settled)
            transport.timeout = max(1.0, min(HTTP_TIMEOUT, remaining))
            delay, reason = worker.cycle(force=True)
            if progress is not None:
                _show_progress(progress, store, through, totals.delivered, started, reason, delay)
            if delay <= 0:
                continue
            remaining = deadline - time.monotonic()
            if reason == "backoff" and delay > remaining:
                stopped, retry_in = "backoff", delay
                break
            pause = max(0.0, min(delay, PROGRESS_EVERY if reason == "backoff" else _POLL))
            if worker.in_flight:
                worker.idle(min(pause, _POLL))  # ends early when an upload does
            else:
                stop.wait(pause)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        worker.request_stop()  # no further batch, nor part of a split batch
        worker.settle(transport.max_seconds())  # the uploads on the wire are settled
        if progress is not None:
            progress.clear()
    store.maintain(idle=True)  # give the drained space back to the file system
    return _result(store, through, totals, started, stopped or "timeout", retry_in)


def stop_reason(
    pending: bool,
    interrupted: bool,
    settled: int,
    max_messages: Optional[int],
    remaining: float,
) -> Optional[str]:
    """Why a drain ends before its next cycle (None: go on). Emptied wins over everything:
    a drain that finished as it was interrupted or ran out of time did its job."""
    if not pending:
        return "emptied"
    if interrupted:
        return "interrupted"
    if max_messages is not None and settled >= max_messages:
        return "max-messages"
    if remaining <= 0:
        return "timeout"
    return None


def _result(
    store: MessageStore,
    through: int,
    totals: Any,
    started: float,
    stopped: str,
    retry_in: Optional[float],
) -> DrainResult:
    left = store.pending_count(through)
    return DrainResult(
        path=str(store.file),
        delivered=totals.delivered,
        dead=totals.dead,
        left=left,
        elapsed=time.monotonic() - started,
        requests=totals.requests,
        failed_attempts=totals.failed_attempts,
        last_error=(totals.last_error or store.backoff().last_error) if left else None,
        stopped="emptied" if left == 0 else stopped,
        retry_in=retry_in if left else None,
    )


def _show_progress(
    progress: Progress,
    store: MessageStore,
    through: int,
    sent: int,
    started: float,
    reason: str,
    delay: float,
) -> None:
    if not progress.due():
        return
    elapsed = time.monotonic() - started
    progress.show(progress_line(sent, elapsed, store.pending_count(through), reason, delay))


def progress_line(delivered: int, elapsed: float, left: int, reason: str, delay: float) -> str:
    """The status line: delivered so far, the rate, what is left and when it should be done
    at this rate, or why nothing moves (a backoff, other takers' batches)."""
    rate = delivered / elapsed if elapsed > 0 else 0.0
    eta = age(left / rate) if rate > 0 and left else "-"
    line = f"drain: {delivered:,} delivered, {rate:,.0f}/s, {left:,} left, ETA {eta}"
    if reason == "backoff":
        line += f", retrying in {age(delay)}"
    elif reason == "idle":
        line += ", waiting for other takers' batches"
    return line


def _batches(sizes: Sequence[int]) -> int:
    """How many requests the worker's packing rule would make of these messages."""
    from ..transport import envelope_overhead

    budget = MAX_REQUEST_BYTES - envelope_overhead()
    batches = used = count = 0
    for size in sizes:
        cost = size + 1
        if count and (count >= MAX_BATCH_MESSAGES or used + cost > budget):
            batches += 1
            used = count = 0
        used += cost
        count += 1
    return batches + (1 if count else 0)


def _destination(args: argparse.Namespace, store: MessageStore, endpoint: str) -> str:
    """The file's own endpoint: its messages go nowhere else (see store/destination.py)."""
    recorded = store.destination().endpoint
    if recorded is None or recorded == endpoint:
        return endpoint
    explicit, source = setting(getattr(args, "endpoint", None), "--endpoint", ENV_ENDPOINT)
    if explicit is None:
        return recorded
    raise CommandError(
        f"{store.file} holds messages for {recorded}, not for {endpoint} (set by {source}): "
        f"drop --endpoint to send them to {recorded}"
    )


def cmd_drain(args: argparse.Namespace) -> int:
    setup_logging(args.quiet)
    write_key = resolve_write_key(args, required=not args.dry_run)
    endpoint = resolve_endpoint(args)
    path = resolve_queue(args, write_key, must_exist=True)
    store = MessageStore.open(path)
    try:
        endpoint = _destination(args, store, endpoint)
        if args.dry_run:
            return _dry_run(args, store, endpoint)
        assert write_key is not None
        from ..transport import Transport

        transport = Transport(write_key, endpoint, timeout=HTTP_TIMEOUT)
        progress = Progress(sys.stderr, sys.stderr.isatty() and not args.quiet and not args.json)
        LOG_HANDLER.progress = progress
        stop = threading.Event()
        try:
            with stopping_on_signals(stop):
                result = drain_queue(
                    store,
                    transport,
                    timeout=args.timeout,
                    max_messages=args.max_messages,
                    progress=progress,
                    stop=stop,
                )
        finally:
            LOG_HANDLER.progress = None
            transport.close()
    finally:
        store.close()
    if args.json:
        print_json(result.as_dict())
    elif not args.quiet:
        print(result.summary(), flush=True)
    if result.stopped == "interrupted" and result.left:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.emptied else EXIT_FAILURE


def _dry_run(args: argparse.Namespace, store: MessageStore, endpoint: str) -> int:
    through = store.last_id()
    sizes = store.ready_sizes(through)
    if args.max_messages is not None:
        sizes = sizes[: args.max_messages]
    stats = store.stats()
    report = {
        "path": str(store.file),
        "dry_run": True,
        "endpoint": endpoint,
        "messages": len(sizes),
        "bytes": sum(sizes),
        "batches": _batches(sizes),
        "leased": stats.leased,
        "dead": stats.dead,
    }
    if args.json:
        print_json(report)
    elif not args.quiet:
        print(
            f"drain (dry run): would send {report['messages']:,} message(s), "
            f"{report['bytes']:,} bytes of JSON, in {report['batches']:,} batch(es) to "
            f"{endpoint}/v1/batch; {stats.leased:,} leased by another taker, "
            f"{stats.dead:,} dead-lettered (not sent). Nothing was sent."
        )
    return EXIT_OK


def register(subparsers: Any) -> None:
    drain = add_command(
        subparsers,
        "drain",
        "upload everything the queue file holds, then exit",
        "  durable-analytics drain --queue /var/lib/myapp/analytics.sqlite3 --timeout 120\n"
        "  durable-analytics drain --queue /var/lib/myapp/analytics.sqlite3 --dry-run --json\n\n"
        + EXIT_STATUS_HELP,
        cmd_drain,
        [shared_options("queue", "write_key", "endpoint")],
        description=(
            "Upload every message the queue file holds when the drain starts, with the "
            "worker's batching, backoff, Retry-After and dead-letter rules, then exit. Safe "
            "while applications write to the file and while another drain runs."
        ),
    )
    drain.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="stop waiting for a struggling server after this long (default 60); "
        "what is left stays queued",
    )
    drain.add_argument(
        "--max-messages", type=positive_int, metavar="N", help="send at most N messages"
    )
    drain.add_argument(
        "--dry-run",
        action="store_true",
        help="count and size what would be sent (messages, bytes, batches); send nothing; "
        "needs no write key",
    )
    drain.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    drain.add_argument(
        "--quiet", "-q", action="store_true", help="no progress, no summary; errors only"
    )
