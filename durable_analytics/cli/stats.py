"""``durable-analytics stats``: what a queue file holds, read from the file itself."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..store import MessageStore
from .options import EXIT_OK, add_command, existing_queue, shared_options
from .output import age, print_json


def cmd_stats(args: argparse.Namespace) -> int:
    store = MessageStore.open(existing_queue(args))
    try:
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        print_json(stats.as_dict())
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
            "-" if stats.oldest_age_seconds is None else f"{age(stats.oldest_age_seconds)} ago",
        ),
        ("last error", stats.last_error or "-"),
    ]
    if stats.retry_at and stats.retry_at > time.time():
        rows.append(("next retry", f"in {age(stats.retry_at - time.time())}"))
    for name, value in rows:
        print(f"{name:<15} {value}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    stats = add_command(
        subparsers,
        "stats",
        "show what a queue file holds",
        "  durable-analytics stats --queue /var/lib/myapp/analytics.sqlite3 --json",
        cmd_stats,
        [shared_options("queue", "write_key")],
        description=(
            "Ready, leased and dead-lettered messages, drops, bytes on disk, the oldest "
            "message's age and the last error, read from the file itself (safe while other "
            "processes use it)."
        ),
    )
    stats.add_argument("--json", action="store_true", help="print one flat JSON object")
