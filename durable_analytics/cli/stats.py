"""``durable-analytics stats``: what a queue file holds, read from the file itself, as a
table, one JSON object or Prometheus metrics; ``--watch`` redraws it in place."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

from ..store import MessageStore
from .options import (
    EXIT_OK,
    CommandError,
    add_command,
    existing_queue,
    positive_float,
    positive_int,
    shared_options,
)
from .output import age
from .signals import stopping_on_signals

WATCH_INTERVAL = 2.0
_CLEAR_BELOW = "\x1b[J"


def _table(stats: Any) -> str:
    rows = [
        ("queue", stats.path),
        ("ready", f"{stats.ready:,}"),
        ("leased", f"{stats.leased:,}"),
        ("dead-lettered", f"{stats.dead:,}"),
        ("dropped", f"{stats.dropped:,} (queue full, all time)"),
        ("filtered", f"{stats.filtered:,} (by before_send, all time)"),
        ("delivered", f"{stats.delivered:,} (all time)"),
        ("failed uploads", f"{stats.failed_uploads:,} (attempts kept and retried, all time)"),
        ("queued bytes", f"{stats.queued_bytes:,}"),
        ("bytes on disk", f"{stats.file_bytes:,}"),
        (
            "oldest message",
            "-" if stats.oldest_age_seconds is None else f"{age(stats.oldest_age_seconds)} ago",
        ),
        ("last error", stats.last_error or "-"),
    ]
    if getattr(stats, "wal_lost", 0):
        rows.append(("WAL LOST", f"{stats.wal_lost:,} time(s): see docs/operations.md"))
    if stats.retry_at and stats.retry_at > time.time():
        rows.append(("next retry", f"in {age(stats.retry_at - time.time())}"))
    return "".join(f"{name:<15} {value}\n" for name, value in rows)


def _json(stats: Any) -> str:
    return json.dumps(stats.as_dict(), ensure_ascii=False) + "\n"


def _prometheus(stats: Any) -> str:
    from ..metrics import metric_families, render

    return render(metric_families([stats]))


FORMATS: Dict[str, Callable[[Any], str]] = {
    "text": _table,
    "json": _json,
    "prometheus": _prometheus,
}


def cmd_stats(args: argparse.Namespace) -> int:
    fmt = "json" if args.json else args.format
    if args.watch is not None and fmt == "prometheus":
        raise CommandError(
            "--watch redraws a table for people; for Prometheus, run stats from a timer or "
            "scrape a process that registers durable_analytics.metrics.QueueMetrics"
        )
    store = MessageStore.open(existing_queue(args))
    try:
        if args.watch is None:
            sys.stdout.write(FORMATS[fmt](store.stats()))
            sys.stdout.flush()
        else:
            _watch(store, FORMATS[fmt], args.watch, args.count)
    finally:
        store.close()
    return EXIT_OK


def _watch(
    store: MessageStore, show: Callable[[Any], str], interval: float, count: Optional[int]
) -> None:
    """Redraw in place on a terminal (the lines drawn last time are overwritten); elsewhere
    print one snapshot after another (one JSON object per line with --json). Ctrl-C or
    SIGTERM ends it, exit 0."""
    out = sys.stdout
    in_place = out.isatty()
    stop = threading.Event()
    drawn = shown = 0
    with stopping_on_signals(stop):
        while not stop.is_set():
            text = show(store.stats())
            if in_place:
                header = f"every {interval:g}s, {time.strftime('%H:%M:%S')} (Ctrl-C to stop)\n"
                text = header + text
                out.write(redraw(drawn) + text)
                drawn = text.count("\n")
            else:
                out.write(text)
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            stop.wait(interval)


def redraw(lines: int) -> str:
    """What moves the cursor back over the last ``lines`` lines and clears them."""
    return f"\x1b[{lines}F{_CLEAR_BELOW}" if lines else ""


def register(subparsers: Any) -> None:
    stats = add_command(
        subparsers,
        "stats",
        "show what a queue file holds",
        "  durable-analytics stats --queue /var/lib/myapp/analytics.sqlite3 --json\n"
        "  durable-analytics stats --queue /var/lib/myapp/analytics.sqlite3 --format prometheus\n"
        "  durable-analytics stats --queue /var/lib/myapp/analytics.sqlite3 --watch",
        cmd_stats,
        [shared_options("queue", "write_key")],
        description=(
            "Ready, leased and dead-lettered messages, drops, bytes on disk, the oldest "
            "message's age and the last error, read from the file itself (safe while other "
            "processes use it)."
        ),
    )
    stats.add_argument(
        "--format",
        choices=list(FORMATS),
        default="text",
        help="text (default), json (one flat object) or prometheus (the text exposition "
        "format, e.g. for the node exporter's textfile collector)",
    )
    stats.add_argument("--json", action="store_true", help="the same as --format json")
    stats.add_argument(
        "--watch",
        type=positive_float,
        nargs="?",
        const=WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {WATCH_INTERVAL:g}) until Ctrl-C, in place on a "
        "terminal",
    )
    stats.add_argument("--count", type=positive_int, help=argparse.SUPPRESS)
