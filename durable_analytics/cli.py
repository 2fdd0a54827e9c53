"""The ``durable-analytics`` command: drain, stats, dead letters, events from the shell, the
local collector and the demo.

A thin layer over the library. Settings resolve as flags, then the environment
(``DURABLE_ANALYTICS_WRITE_KEY``, ``DURABLE_ANALYTICS_ENDPOINT``, ``DURABLE_ANALYTICS_QUEUE``),
then the library's defaults. Every subcommand opens the same queue file the applications use:
``drain`` is one more :class:`~durable_analytics.worker.Worker` taking from it, so it follows
the same batching, backoff, ``Retry-After`` and dead-letter rules and is safe to run next to
them. Exit status: 0 done, 1 runtime failure (messages left, not delivered), 2 usage or
configuration error; see ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NoReturn,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ._version import __version__
from .client import DEFAULT_ENDPOINT, MAX_REQUEST_BYTES, Client
from .errors import AnalyticsError, ConfigError, QueueCorrupt, RejectedError, ValidationError
from .messages import Alias, Encoder, Group, Identify, Message, Page, Screen, Track
from .paths import default_queue_path
from .retry import RetryPolicy
from .store import DeadLetter, MessageStore

if TYPE_CHECKING:
    from .transport import Transport

# transport.py (and with it requests) is imported only by the commands that send: stats and
# dead-letters start faster, which matters in monitoring checks run every minute.

__all__ = ["main", "build_parser", "drain_queue", "DrainResult"]

PROG = "durable-analytics"
ENV_WRITE_KEY = "DURABLE_ANALYTICS_WRITE_KEY"
ENV_ENDPOINT = "DURABLE_ANALYTICS_ENDPOINT"
ENV_QUEUE = "DURABLE_ANALYTICS_QUEUE"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MAX_BATCH_MESSAGES = 500
HTTP_TIMEOUT = 15.0
_POLL = 0.1  # how often drain re-reads the file while other takers hold the leases
_PROGRESS_EVERY = 0.25
_NEVER = 10.0**9  # a flush interval that never comes: shell events are stored, not sent

DEMO_WRITE_KEY = "demo-write-key"
DEMO_EVENTS = 3000

log = logging.getLogger("durable_analytics")


class CommandError(Exception):
    """A problem the command reports in one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------
# Settings: flag, then environment, then the library's default


def _setting(flag: Optional[str], flag_name: str, env: str) -> Tuple[Optional[str], str]:
    """The value and where it came from; an empty environment variable counts as unset."""
    if flag is not None:
        if not flag.strip():
            raise CommandError(f"{flag_name} is empty: give a value or leave the option out")
        return flag, flag_name
    value = os.environ.get(env, "")
    if value.strip():
        return value, env
    return None, ""


def resolve_write_key(args: argparse.Namespace, *, required: bool = True) -> Optional[str]:
    value, _ = _setting(getattr(args, "write_key", None), "--write-key", ENV_WRITE_KEY)
    if value is None and required:
        raise CommandError(f"no write key: pass --write-key or set {ENV_WRITE_KEY}")
    return value


def resolve_endpoint(args: argparse.Namespace) -> str:
    value, source = _setting(getattr(args, "endpoint", None), "--endpoint", ENV_ENDPOINT)
    from .transport import check_endpoint

    try:
        return check_endpoint(value if value is not None else DEFAULT_ENDPOINT)
    except ConfigError as exc:
        raise CommandError(f"{exc} (set by {source})") from None


def resolve_queue(args: argparse.Namespace, write_key: Optional[str], *, must_exist: bool) -> Path:
    """``--queue``, ``$DURABLE_ANALYTICS_QUEUE``, or the default file for the write key."""
    value, source = _setting(getattr(args, "queue", None), "--queue", ENV_QUEUE)
    if value is not None:
        path = Path(value).expanduser()
    elif write_key is not None:
        path, source = default_queue_path(write_key), "the default file for this write key"
    else:
        raise CommandError(
            f"no queue file: pass --queue PATH or --write-key KEY (or set {ENV_QUEUE} or "
            f"{ENV_WRITE_KEY})"
        )
    if path.is_dir():
        raise CommandError(f"{path} (from {source}) is a directory: give the queue file's path")
    if must_exist and not path.exists():
        raise CommandError(
            f"no queue file at {path} (from {source}): check the path; a queue file is "
            "created when an application records its first event"
        )
    return path


# --------------------------------------------------------------------------------------------
# Output helpers


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


class Progress:
    """One self-rewriting status line on a terminal; silent everywhere else."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether a new line would be shown now (at most four a second)."""
        return self.enabled and time.monotonic() - self._last >= _PROGRESS_EVERY

    def show(self, line: str) -> None:
        if not self.due():
            return
        self._last = time.monotonic()
        with self._lock:
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)

    def clear(self) -> None:
        with self._lock:
            if self.enabled and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0


class _LogHandler(logging.Handler):
    """The library's warnings on stderr, prefixed, without tearing the progress line."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: Optional[Progress] = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.progress is not None:
                self.progress.clear()
            sys.stderr.write(f"{PROG}: {_one_line(record.getMessage())}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_LOG_HANDLER = _LogHandler()


def _setup_logging(quiet: bool) -> None:
    if _LOG_HANDLER not in log.handlers:
        log.addHandler(_LOG_HANDLER)
    _LOG_HANDLER.setLevel(logging.ERROR if quiet else logging.WARNING)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
# drain


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
                "backoff": f"the next retry, in {_age(self.retry_in)}, is past --timeout",
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
    Setting ``stop`` ends the drain after the batch in flight, so no lease is left behind.
    """
    from .worker import Worker

    stop = stop or threading.Event()
    worker = Worker(
        store,
        transport,
        policy=policy or RetryPolicy(),
        flush_at=1,
        flush_interval=_POLL,
        max_batch_messages=MAX_BATCH_MESSAGES,
        max_batch_bytes=MAX_REQUEST_BYTES,
    )
    totals = worker.totals
    started = time.monotonic()
    deadline = started + timeout
    through = store.last_id()
    stopped = "timeout"
    retry_in: Optional[float] = None
    try:
        while True:
            if not store.pending_through(through):
                stopped = "emptied"
                break
            if stop.is_set():
                stopped = "interrupted"
                break
            settled = totals.delivered + totals.dead
            if max_messages is not None and settled >= max_messages:
                stopped = "max-messages"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
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
            stop.wait(max(0.0, min(delay, _PROGRESS_EVERY if reason == "backoff" else _POLL)))
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        if progress is not None:
            progress.clear()
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
    elapsed = max(time.monotonic() - started, 1e-6)
    line = f"drain: {sent:,} sent, {sent / elapsed:,.0f}/s, {store.pending_count(through):,} left"
    if reason == "backoff":
        line += f", retrying in {_age(delay)}"
    elif reason == "idle":
        line += ", waiting for other takers' batches"
    progress.show(line)


def _batches(sizes: Sequence[int]) -> int:
    """How many requests the worker's packing rule would make of these messages."""
    from .transport import envelope_overhead

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


def cmd_drain(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    write_key = resolve_write_key(args, required=not args.dry_run)
    endpoint = resolve_endpoint(args)
    path = resolve_queue(args, write_key, must_exist=True)
    store = MessageStore.open(path)
    try:
        if args.dry_run:
            return _dry_run(args, store, endpoint)
        assert write_key is not None
        from .transport import Transport

        transport = Transport(write_key, endpoint, timeout=HTTP_TIMEOUT)
        progress = Progress(sys.stderr, sys.stderr.isatty() and not args.quiet and not args.json)
        _LOG_HANDLER.progress = progress
        stop = threading.Event()
        try:
            with _stopping_on_signals(stop):
                result = drain_queue(
                    store,
                    transport,
                    timeout=args.timeout,
                    max_messages=args.max_messages,
                    progress=progress,
                    stop=stop,
                )
        finally:
            _LOG_HANDLER.progress = None
            transport.close()
    finally:
        store.close()
    if args.json:
        _print_json(result.as_dict())
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
        _print_json(report)
    elif not args.quiet:
        print(
            f"drain (dry run): would send {report['messages']:,} message(s), "
            f"{report['bytes']:,} bytes of JSON, in {report['batches']:,} batch(es) to "
            f"{endpoint}/v1/batch; {stats.leased:,} leased by another taker, "
            f"{stats.dead:,} dead-lettered (not sent). Nothing was sent."
        )
    return EXIT_OK


@contextlib.contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT or SIGTERM sets ``stop`` (finish the batch in flight, then stop); a second one
    interrupts at once. Handlers can only be installed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {
        signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# --------------------------------------------------------------------------------------------
# stats


def cmd_stats(args: argparse.Namespace) -> int:
    write_key = resolve_write_key(args, required=False)
    store = MessageStore.open(resolve_queue(args, write_key, must_exist=True))
    try:
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        _print_json(stats.as_dict())
        return EXIT_OK
    rows = [
        ("queue", stats.path),
        ("ready", f"{stats.ready:,}"),
        ("leased", f"{stats.leased:,}"),
        ("dead-lettered", f"{stats.dead:,}"),
        ("dropped", f"{stats.dropped:,} (queue full, all time)"),
        ("delivered", f"{stats.delivered:,} (all time)"),
        ("queued bytes", f"{stats.queued_bytes:,}"),
        ("bytes on disk", f"{stats.file_bytes:,}"),
        (
            "oldest message",
            "-" if stats.oldest_age_seconds is None else f"{_age(stats.oldest_age_seconds)} ago",
        ),
        ("last error", stats.last_error or "-"),
    ]
    if stats.retry_at and stats.retry_at > time.time():
        rows.append(("next retry", f"in {_age(stats.retry_at - time.time())}"))
    for name, value in rows:
        print(f"{name:<15} {value}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# dead-letters


def _describe_dead(letter: DeadLetter, now: float) -> Dict[str, Any]:
    try:
        message = json.loads(letter.data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        message = {}
    return {
        "id": letter.id,
        "http_status": letter.http_status,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "age_seconds": round(max(0.0, now - letter.dead_at), 3),
        "created": letter.created,
        "dead_at": letter.dead_at,
        "type": message.get("type"),
        "messageId": message.get("messageId"),
        "event": message.get("event") or message.get("name"),
        "message": message or None,
    }


def cmd_dead_list(args: argparse.Namespace) -> int:
    write_key = resolve_write_key(args, required=False)
    store = MessageStore.open(resolve_queue(args, write_key, must_exist=True))
    try:
        letters = store.dead_letters(limit=args.limit)
        total = store.stats().dead
    finally:
        store.close()
    now = time.time()
    described = [_describe_dead(letter, now) for letter in letters]
    if args.json:
        _print_json(described)
        return EXIT_OK
    if not described:
        print("no dead letters")
        return EXIT_OK
    header = ("ID", "STATUS", "AGE", "TYPE", "MESSAGE ID", "EVENT")
    print("{:>8}  {:<6}  {:>8}  {:<8}  {:<36}  {:<20}  REASON".format(*header))
    for item in described:
        status = "-" if item["http_status"] is None else str(item["http_status"])
        print(
            f"{item['id']:>8}  {status:<6}  {_age(item['age_seconds']):>8}  "
            f"{str(item['type'] or '?'):<8}  {str(item['messageId'] or '-'):<36}  "
            f"{_one_line(item['event'] or '-')[:20]:<20}  {_one_line(item['reason'] or '-')}"
        )
    if total > len(described):
        print(f"({len(described):,} of {total:,} shown; raise --limit to see more)")
    return EXIT_OK


def _selectors(args: argparse.Namespace, verb: str) -> Tuple[Optional[List[int]], Optional[float]]:
    ids = args.ids or None
    if args.all and (ids or args.older_than is not None):
        raise CommandError(
            "--all selects every dead letter: do not combine it with --id/--older-than"
        )
    if not args.all and ids is None and args.older_than is None:
        raise CommandError(f"say which dead letters to {verb}: --all, --id N or --older-than SECS")
    return ids, args.older_than


def cmd_dead_requeue(args: argparse.Namespace) -> int:
    ids, older_than = _selectors(args, "requeue")
    write_key = resolve_write_key(args, required=False)
    store = MessageStore.open(resolve_queue(args, write_key, must_exist=True))
    try:
        count = store.requeue_dead(ids, older_than)
    finally:
        store.close()
    if args.json:
        _print_json({"path": str(store.file), "requeued": count})
    else:
        print(
            f"requeued {count:,} dead letter(s) in {store.file}; they are sent by the next "
            "drain or by any application using this queue file"
        )
    return EXIT_OK


def cmd_dead_purge(args: argparse.Namespace) -> int:
    ids, older_than = _selectors(args, "purge")
    write_key = resolve_write_key(args, required=False)
    path = resolve_queue(args, write_key, must_exist=True)
    if not args.yes and not sys.stdin.isatty():
        raise CommandError("purge deletes dead letters for good: pass --yes to confirm")
    store = MessageStore.open(path)
    try:
        if not args.yes:
            matching = _count_matching(store, ids, older_than)
            if matching == 0:
                print("no matching dead letters")
                return EXIT_OK
            answer = input(f"Delete {matching:,} dead letter(s) from {path} for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_FAILURE
        count = store.purge_dead(ids, older_than)
    finally:
        store.close()
    if args.json:
        _print_json({"path": str(path), "purged": count})
    else:
        print(f"purged {count:,} dead letter(s) from {path}")
    return EXIT_OK


def _count_matching(
    store: MessageStore, ids: Optional[List[int]], older_than: Optional[float]
) -> int:
    letters = store.dead_letters(limit=max(1, store.stats().dead))
    cutoff = None if older_than is None else time.time() - older_than
    wanted = None if ids is None else set(ids)
    return sum(
        1
        for letter in letters
        if (wanted is None or letter.id in wanted) and (cutoff is None or letter.dead_at <= cutoff)
    )


# --------------------------------------------------------------------------------------------
# Events from the shell


def _json_option(value: Optional[str], flag: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CommandError(f"{flag} is not valid JSON ({exc}); pass a JSON object") from None


def _message(args: argparse.Namespace) -> Message:
    common: Dict[str, Any] = {
        "user_id": args.user_id,
        "context": _json_option(args.context, "--context"),
        "integrations": _json_option(args.integrations, "--integrations"),
        "timestamp": args.timestamp,
        "message_id": args.message_id,
    }
    kind = args.command
    if kind != "alias":
        common["anonymous_id"] = args.anonymous_id
    if kind == "track":
        return Track(
            event=args.event, properties=_json_option(args.properties, "--properties"), **common
        )
    if kind == "identify":
        return Identify(traits=_json_option(args.traits, "--traits"), **common)
    if kind in ("page", "screen"):
        cls = Page if kind == "page" else Screen
        return cls(
            name=args.name,
            category=args.category,
            properties=_json_option(args.properties, "--properties"),
            **common,
        )
    if kind == "group":
        return Group(group_id=args.group_id, traits=_json_option(args.traits, "--traits"), **common)
    return Alias(previous_id=args.previous_id, **common)


def cmd_event(args: argparse.Namespace) -> int:
    _setup_logging(False)
    write_key = resolve_write_key(args)
    assert write_key is not None
    endpoint = resolve_endpoint(args)
    path = resolve_queue(args, write_key, must_exist=False)
    message = _message(args)
    Encoder().encode(message)  # validate before the queue file is even opened
    rejected: Dict[str, str] = {}
    errors: List[str] = []

    def on_error(exc: Exception, messages: List[Dict[str, Any]]) -> None:
        errors.append(str(exc))
        if isinstance(exc, RejectedError):
            rejected.update({str(m.get("messageId")): str(exc) for m in messages})

    client = Client(
        write_key,
        endpoint=endpoint,
        queue_path=path,
        flush_at=1_000_000,
        flush_interval=_NEVER,
        flush_timeout=args.timeout,
        exit_timeout=0.0,
        on_error=on_error,
    )
    try:
        message_id = client.enqueue(message)
        if message_id is None:
            raise CommandError(f"{path} is full: the event was not stored", EXIT_FAILURE)
        print(message_id, flush=True)
        if not args.flush:
            return EXIT_OK
        settled = client.flush(args.timeout)
    finally:
        client.shutdown(timeout=0)
    if not settled:
        last_error = errors[-1] if errors else client.stats().last_error
        why = f" (last error: {_one_line(last_error)})" if last_error else ""
        raise CommandError(
            f"not delivered within {args.timeout:g}s{why}; it stays queued in {path} for "
            "`durable-analytics drain`",
            EXIT_FAILURE,
        )
    if message_id in rejected:
        raise CommandError(
            f"the server rejected it ({_one_line(rejected[message_id])}); it is kept as a "
            "dead letter: `durable-analytics dead-letters list`",
            EXIT_FAILURE,
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# collect


def _event_line(message: Dict[str, Any]) -> str:
    kind = str(message.get("type", "?"))
    parts = [f"{kind:<8}", str(message.get("messageId", "-"))]
    if message.get("userId") is not None:
        parts.append(f"userId={message['userId']}")
    elif message.get("anonymousId") is not None:
        parts.append(f"anonymousId={message['anonymousId']}")
    for key in {"track": ("event",), "page": ("name",), "screen": ("name",)}.get(kind, ()):
        if message.get(key) is not None:
            parts.append(f"{key}={json.dumps(message[key], ensure_ascii=False)}")
    if kind == "group" and message.get("groupId") is not None:
        parts.append(f"groupId={message['groupId']}")
    if kind == "alias" and message.get("previousId") is not None:
        parts.append(f"previousId={message['previousId']}")
    return " ".join(parts)


def cmd_collect(args: argparse.Namespace) -> int:
    from .testing import Collector

    write_key = resolve_write_key(args, required=False)
    lock = threading.Lock()

    def show(message: Dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False) if args.json else _event_line(message)
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    collector = Collector(
        write_key, host="127.0.0.1", port=args.port, out=args.out, on_message=show
    )
    try:
        collector.start()
    except OSError as exc:
        target = f"--out {args.out}" if exc.filename is not None else f"--port {args.port}"
        raise CommandError(
            f"cannot start the collector ({exc.strerror or exc}): check {target}"
        ) from None
    stop = threading.Event()
    try:
        with _stopping_on_signals(stop):
            sys.stderr.write(
                f"collect: listening on {collector.url} (point applications at --endpoint "
                f"{collector.url}); Ctrl-C to stop\n"
            )
            sys.stderr.flush()
            while not stop.wait(0.2):
                pass
    finally:
        collector.stop()
    sys.stderr.write(
        f"collect: stopped; {len(collector.messages):,} event(s) in "
        f"{len(collector.requests):,} request(s), {collector.duplicates:,} duplicate(s)\n"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# demo


@dataclass
class _ChildRun:
    pid: int
    ids: List[str]
    killed: bool
    returncode: int


def _run_child(
    argv: List[str], env: Dict[str, str], kill_after: Optional[int], log_file: Path
) -> _ChildRun:
    """Run a demo child, collecting the messageIds it reports; SIGKILL it after ``kill_after``.

    A child reports an id only after ``track()`` returned, i.e. after the event was committed:
    every reported id must reach the collector. Lines still in the pipe when the kill lands
    are read too: those calls had returned.
    """
    ids: List[str] = []
    killed = False
    with open(log_file, "ab") as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
        assert proc.stdout is not None
        _shrink_pipe(proc.stdout.fileno())
        with proc.stdout:
            for line in proc.stdout:
                if line.endswith("\n") and line.strip():
                    ids.append(line.strip())
                if kill_after is not None and not killed and len(ids) >= kill_after:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
        returncode = proc.wait()
    return _ChildRun(proc.pid, ids, killed and returncode == -signal.SIGKILL, returncode)


def _shrink_pipe(fd: int) -> None:
    """A small pipe keeps the child at most ~100 events ahead of what the parent has read,
    so the kill lands partway even on a busy machine (Linux; elsewhere the default stays)."""
    if sys.platform.startswith("linux"):
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)


def cmd_demo(args: argparse.Namespace) -> int:
    from .testing import Collector

    started = time.monotonic()
    total = args.events
    kill_after = args.kill_after if args.kill_after is not None else total // 2
    if not 0 < kill_after < total:
        raise CommandError("--kill-after must be between 1 and --events - 1")
    workdir = Path(tempfile.mkdtemp(prefix="durable-analytics-demo-"))  # 0700
    queue = workdir / "queue.sqlite3"
    child_log = workdir / "children.log"
    collector = Collector(DEMO_WRITE_KEY).start()
    try:
        print(f"durable-analytics demo {__version__}: no account, no network")
        print(f"  collector  {collector.url} (loopback, in this process)")
        print(f"  queue      {queue} (fresh; removed afterwards)")
        env = dict(os.environ)
        env[ENV_WRITE_KEY] = DEMO_WRITE_KEY
        env.pop(ENV_QUEUE, None)
        env.pop(ENV_ENDPOINT, None)

        def child(first: int, count: int) -> List[str]:
            return [
                sys.executable, "-m", "durable_analytics", "demo-child",
                "--queue", str(queue), "--endpoint", collector.url,
                "--first", str(first), "--count", str(count),
            ]  # fmt: skip

        one = _run_child(child(0, total), env, kill_after, child_log)
        at_kill = len(collector.message_ids)
        if one.killed:
            print(
                f"  child 1    pid {one.pid}: {len(one.ids):,} track() calls returned, then "
                f"SIGKILL ({at_kill:,} delivered by then)"
            )
        elif one.returncode == 0:
            print(f"  child 1    pid {one.pid}: recorded {len(one.ids):,} events, exited first")
        else:
            return _demo_child_failed(1, one, child_log)
        rest = total - len(one.ids)
        two = _ChildRun(0, [], False, 0)
        if rest > 0:
            two = _run_child(child(len(one.ids), rest), env, None, child_log)
            if two.returncode != 0:
                return _demo_child_failed(2, two, child_log)
            print(
                f"  child 2    pid {two.pid}: recorded the other {len(two.ids):,} events, "
                "exited without waiting for delivery"
            )
        from .transport import Transport

        store = MessageStore.open(queue)
        transport = Transport(DEMO_WRITE_KEY, collector.url, timeout=5.0)
        try:
            drained = drain_queue(
                store,
                transport,
                timeout=30.0,
                policy=RetryPolicy(initial=0.05, maximum=0.5),
            )
        finally:
            transport.close()
            store.close()
        print(f"  {drained.summary()}")
        recorded: Set[str] = set(one.ids) | set(two.ids)
        arrived = collector.message_ids
        delivered = len(recorded & arrived)
        lost = len(recorded - arrived)
        extra = len(arrived - recorded)
        elapsed = time.monotonic() - started
        print()
        print(f"  events recorded    {len(recorded):>7,}  (track() calls that returned)")
        print(f"  events delivered   {delivered:>7,}  (distinct messageIds at the collector)")
        if extra:
            print(f"  also delivered     {extra:>7,}  (stored just before the kill, unreported)")
        print(
            f"  duplicates removed {collector.duplicates:>7,}  (redelivered after the kill; "
            "deduplicated by messageId)"
        )
        print(f"  lost               {lost:>7,}")
        print(f"  elapsed            {elapsed:>7.1f}s")
        print()
        if lost or len(recorded) != total:
            print(f"FAILED: {lost:,} recorded event(s) never arrived")
            return EXIT_FAILURE
        print("every recorded event arrived, in spite of the SIGKILL.")
        return EXIT_OK
    finally:
        collector.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _demo_child_failed(number: int, run: _ChildRun, log_file: Path) -> int:
    detail = _one_line(log_file.read_text(errors="replace"))[-500:]
    sys.stderr.write(
        f"{PROG}: error: demo child {number} exited with status {run.returncode}: {detail}\n"
    )
    return EXIT_FAILURE


def cmd_demo_child(args: argparse.Namespace) -> int:
    """Record numbered events, reporting each messageId only after ``track()`` returned."""
    write_key = resolve_write_key(args)
    client = Client(
        write_key,
        endpoint=args.endpoint,
        queue_path=args.queue,
        flush_at=100,
        flush_interval=0.2,
        exit_timeout=0.0,
        retry_policy=RetryPolicy(initial=0.05, maximum=0.5),
    )
    out = sys.stdout
    for number in range(args.first, args.first + args.count):
        message_id = client.track(
            user_id=f"demo-user-{number % 25}",
            event="Demo Event",
            properties={"n": number},
        )
        out.write(f"{message_id}\n")
        out.flush()
    client.shutdown(timeout=0)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# The parser


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive number of seconds")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of seconds >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive whole number")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: use a port from 0 to 65535")
    return value


def _options(*names: str) -> argparse.ArgumentParser:
    """A parent parser with the shared settings among ``names``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (flag, then environment, then default)")
    if "queue" in names:
        group.add_argument(
            "--queue",
            metavar="PATH",
            help=f"queue file (env {ENV_QUEUE}; default: the file for the write key)",
        )
    if "write_key" in names:
        group.add_argument(
            "--write-key",
            metavar="KEY",
            help=f"source write key (env {ENV_WRITE_KEY}; prefer the env: argv is visible in ps)",
        )
    if "endpoint" in names:
        group.add_argument(
            "--endpoint",
            metavar="URL",
            help=f"batch API base URL (env {ENV_ENDPOINT}; default {DEFAULT_ENDPOINT})",
        )
    return parent


EXIT_STATUS_HELP = """\
exit status:
  0    done (drain: the queue was emptied)
  1    runtime failure: messages left (server unreachable, timeout), not delivered, lost
  2    usage or configuration error: a bad or missing setting, an invalid event, a bad file
  130  interrupted (Ctrl-C or SIGTERM); what was not sent stays queued"""


def _add(
    subparsers: Any,
    name: str,
    summary: str,
    example: str,
    handler: Callable[[argparse.Namespace], int],
    parents: Sequence[argparse.ArgumentParser] = (),
    description: Optional[str] = None,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description or summary, 79),
        epilog="example:\n" + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    parser.set_defaults(handler=handler)
    return parser


def _event_options(parser: argparse.ArgumentParser, kind: str) -> None:
    fields = parser.add_argument_group("event")
    if kind == "alias":
        fields.add_argument("--previous-id", metavar="ID", help="the old id (required)")
        fields.add_argument("--user-id", metavar="ID", help="the new id (required)")
    else:
        fields.add_argument("--user-id", metavar="ID", help="user id (this or --anonymous-id)")
        fields.add_argument("--anonymous-id", metavar="ID", help="anonymous id")
    if kind == "track":
        fields.add_argument("--event", metavar="NAME", help="event name (required)")
        fields.add_argument("--properties", metavar="JSON", help="event properties, a JSON object")
    elif kind in ("page", "screen"):
        fields.add_argument("--name", metavar="NAME", help=f"{kind} name")
        fields.add_argument("--category", metavar="NAME", help=f"{kind} category")
        fields.add_argument("--properties", metavar="JSON", help=f"{kind} properties (JSON object)")
    elif kind == "group":
        fields.add_argument("--group-id", metavar="ID", help="group id (required)")
        fields.add_argument("--traits", metavar="JSON", help="group traits, a JSON object")
    elif kind == "identify":
        fields.add_argument("--traits", metavar="JSON", help="user traits, a JSON object")
    fields.add_argument("--context", metavar="JSON", help="context object (JSON)")
    fields.add_argument(
        "--integrations", metavar="JSON", help="integrations selection, e.g. '{\"All\": false}'"
    )
    fields.add_argument(
        "--timestamp", metavar="ISO", help="when it happened (ISO 8601; default now)"
    )
    fields.add_argument("--message-id", metavar="ID", help="messageId (default: a new UUID)")
    delivery = parser.add_argument_group("delivery")
    delivery.add_argument(
        "--flush", action="store_true", help="wait for delivery (exit 1 if not delivered in time)"
    )
    delivery.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="with --flush: how long to wait (default 10)",
    )


_EVENT_EXAMPLES = {
    "track": "durable-analytics track --user-id 42 --event 'Backup Finished' "
    "--properties '{\"gigabytes\": 12}'",
    "identify": 'durable-analytics identify --user-id 42 --traits \'{"plan": "pro"}\'',
    "page": "durable-analytics page --user-id 42 --name Pricing --properties "
    '\'{"path": "/pricing"}\'',
    "screen": "durable-analytics screen --anonymous-id a1b2 --name Settings",
    "group": "durable-analytics group --user-id 42 --group-id acme --traits '{\"seats\": 20}'",
    "alias": "durable-analytics alias --previous-id a1b2 --user-id 42",
}
_EVENT_SUMMARIES = {
    "track": "record an action a user performed",
    "identify": "tie a user to their traits",
    "page": "record a page view",
    "screen": "record a mobile screen view",
    "group": "associate a user with a group",
    "alias": "link a previous id to a user id",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=textwrap.fill(
            "Segment-compatible analytics whose queue lives on disk: deliver, inspect and "
            "record events from the shell.",
            79,
        ),
        epilog=(
            "environment:\n"
            f"  {ENV_WRITE_KEY}  write key (commands that send or record need it)\n"
            f"  {ENV_ENDPOINT}   batch API base URL (default {DEFAULT_ENDPOINT})\n"
            f"  {ENV_QUEUE}      queue file (default: one file per write key)\n\n"
            + EXIT_STATUS_HELP
            + "\n\nexample:\n  durable-analytics demo\n"
            "  DURABLE_ANALYTICS_WRITE_KEY=... durable-analytics drain --timeout 60\n"
            "\n'durable-analytics COMMAND --help' shows each command's options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    drain = _add(
        sub,
        "drain",
        "upload everything the queue file holds, then exit",
        "  durable-analytics drain --queue /var/lib/myapp/analytics.sqlite3 --timeout 120\n"
        "  durable-analytics drain --queue /var/lib/myapp/analytics.sqlite3 --dry-run --json\n\n"
        + EXIT_STATUS_HELP,
        cmd_drain,
        [_options("queue", "write_key", "endpoint")],
        description=(
            "Upload every message the queue file holds when the drain starts, with the "
            "worker's batching, backoff, Retry-After and dead-letter rules, then exit. Safe "
            "while applications write to the file and while another drain runs."
        ),
    )
    drain.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="stop waiting for a struggling server after this long (default 60); "
        "what is left stays queued",
    )
    drain.add_argument(
        "--max-messages", type=_positive_int, metavar="N", help="send at most N messages"
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

    stats = _add(
        sub,
        "stats",
        "show what a queue file holds",
        "  durable-analytics stats --queue /var/lib/myapp/analytics.sqlite3 --json",
        cmd_stats,
        [_options("queue", "write_key")],
        description=(
            "Ready, leased and dead-lettered messages, drops, bytes on disk, the oldest "
            "message's age and the last error, read from the file itself (safe while other "
            "processes use it)."
        ),
    )
    stats.add_argument("--json", action="store_true", help="print one flat JSON object")

    dead = _add(
        sub,
        "dead-letters",
        "list, requeue or purge messages the server rejected",
        "  durable-analytics dead-letters list --queue /var/lib/myapp/analytics.sqlite3\n"
        "  durable-analytics dead-letters requeue --all --queue /var/lib/myapp/analytics.sqlite3",
        lambda args: _missing_subcommand(dead),
    )
    dead_sub = dead.add_subparsers(dest="action", metavar="ACTION")
    queue_options = _options("queue", "write_key")
    listing = _add(
        dead_sub,
        "list",
        "show dead letters with their HTTP status and reason, oldest first",
        "  durable-analytics dead-letters list --queue q.sqlite3 --limit 20",
        cmd_dead_list,
        [queue_options],
    )
    listing.add_argument(
        "--limit", type=_positive_int, default=100, metavar="N", help="show at most N (100)"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    for name, summary, handler, example in (
        (
            "requeue",
            "make dead letters ready again, after fixing what made the server reject them",
            cmd_dead_requeue,
            "  durable-analytics dead-letters requeue --all --queue q.sqlite3\n"
            "  durable-analytics dead-letters requeue --id 12 --id 13 --queue q.sqlite3",
        ),
        (
            "purge",
            "delete dead letters for good (asks for confirmation unless --yes)",
            cmd_dead_purge,
            "  durable-analytics dead-letters purge --older-than 2592000 --yes --queue q.sqlite3",
        ),
    ):
        action = _add(dead_sub, name, summary, example, handler, [queue_options])
        chosen = action.add_argument_group("which dead letters")
        chosen.add_argument("--all", action="store_true", help="every dead letter")
        chosen.add_argument(
            "--id",
            dest="ids",
            type=_positive_int,
            action="append",
            metavar="N",
            help="the dead letter with this id (repeatable; ids from `dead-letters list`)",
        )
        chosen.add_argument(
            "--older-than",
            type=_non_negative_float,
            metavar="SECONDS",
            help="dead letters rejected at least this long ago",
        )
        action.add_argument("--json", action="store_true", help="print the count as JSON")
        if name == "purge":
            action.add_argument("--yes", "-y", action="store_true", help="do not ask")

    for kind in ("track", "identify", "page", "screen", "group", "alias"):
        event = _add(
            sub,
            kind,
            f"{_EVENT_SUMMARIES[kind]} (stored at once; prints the messageId)",
            "  " + _EVENT_EXAMPLES[kind],
            cmd_event,
            [_options("queue", "write_key", "endpoint")],
            description=(
                f"{_EVENT_SUMMARIES[kind].capitalize()}. The event is validated and committed "
                "to the queue file, its messageId printed, and the command returns at once; "
                "the applications' workers or `durable-analytics drain` deliver it. --flush "
                "waits for delivery instead."
            ),
        )
        _event_options(event, kind)

    collect = _add(
        sub,
        "collect",
        "run a local Segment-compatible collector and print what it receives",
        "  durable-analytics collect --port 8765 --out events.jsonl\n"
        "  # elsewhere: durable-analytics track --endpoint http://127.0.0.1:8765 ...",
        cmd_collect,
        description=(
            "Run the loopback collector (POST /v1/batch on 127.0.0.1) in the foreground and "
            "print each event it accepts, one line each. Ctrl-C or SIGTERM stops it."
        ),
    )
    collect.add_argument(
        "--port", type=_port, default=8765, metavar="PORT", help="port (default 8765; 0: any free)"
    )
    collect.add_argument("--json", action="store_true", help="print each message as JSON")
    collect.add_argument("--out", metavar="FILE", help="also append each message to FILE (JSONL)")
    collect.add_argument(
        "--write-key",
        metavar="KEY",
        help=f"accept only this write key (env {ENV_WRITE_KEY}; default: any key)",
    )

    demo = _add(
        sub,
        "demo",
        "record events in a child process, SIGKILL it, restart, drain: nothing is lost",
        "  durable-analytics demo",
        cmd_demo,
        description=(
            "A self-contained run of the main job, with no account and no network: a loopback "
            "collector, a fresh queue file, a child process that records events and is killed "
            "with SIGKILL partway, a second child that records the rest, a drain, and a "
            "report. Exit 0 only if every recorded event arrived."
        ),
    )
    demo.add_argument("--events", type=_positive_int, default=DEMO_EVENTS, help=argparse.SUPPRESS)
    demo.add_argument("--kill-after", type=_positive_int, help=argparse.SUPPRESS)

    child = sub.add_parser("demo-child", parents=[_options("write_key")])
    child.set_defaults(handler=cmd_demo_child)
    child.add_argument("--queue", required=True)
    child.add_argument("--endpoint", required=True)
    child.add_argument("--first", type=int, default=0)
    child.add_argument("--count", type=int, required=True)
    return parser


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"{parser.prog}: error: choose an action (see {parser.prog} --help)\n")
    return EXIT_USAGE


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    sys.stderr.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except CommandError as exc:
        _fail(exc.message)
        return exc.status
    except (ConfigError, ValidationError, QueueCorrupt) as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except AnalyticsError as exc:
        _fail(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _fail("interrupted; whatever was not sent stays queued")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): exit quietly, without a second error at shutdown.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
