"""``durable-analytics dead-letters list | requeue | purge``: messages the server rejected."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..store import DeadLetter, MessageStore
from .options import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    existing_queue,
    non_negative_float,
    positive_int,
    shared_options,
)
from .output import age, one_line, print_json


def _describe(letter: DeadLetter, now: float) -> Dict[str, Any]:
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


def cmd_list(args: argparse.Namespace) -> int:
    store = MessageStore.open(existing_queue(args))
    try:
        letters = store.dead_letters(limit=args.limit)
        total = store.stats().dead
    finally:
        store.close()
    now = time.time()
    described = [_describe(letter, now) for letter in letters]
    if args.json:
        print_json(described)
        return EXIT_OK
    if not described:
        print("no dead letters")
        return EXIT_OK
    header = ("ID", "STATUS", "AGE", "TYPE", "MESSAGE ID", "EVENT")
    print("{:>8}  {:<6}  {:>8}  {:<8}  {:<36}  {:<20}  REASON".format(*header))
    for item in described:
        status = "-" if item["http_status"] is None else str(item["http_status"])
        print(
            f"{item['id']:>8}  {status:<6}  {age(item['age_seconds']):>8}  "
            f"{str(item['type'] or '?'):<8}  {str(item['messageId'] or '-'):<36}  "
            f"{one_line(item['event'] or '-')[:20]:<20}  {one_line(item['reason'] or '-')}"
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


def cmd_requeue(args: argparse.Namespace) -> int:
    ids, older_than = _selectors(args, "requeue")
    store = MessageStore.open(existing_queue(args))
    try:
        count = store.requeue_dead(ids, older_than)
    finally:
        store.close()
    if args.json:
        print_json({"path": str(store.file), "requeued": count})
    else:
        print(
            f"requeued {count:,} dead letter(s) in {store.file}; they are sent by the next "
            "drain or by any application using this queue file"
        )
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    ids, older_than = _selectors(args, "purge")
    path = existing_queue(args)
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
        print_json({"path": str(path), "purged": count})
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


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"{parser.prog}: error: choose an action (see {parser.prog} --help)\n")
    return EXIT_USAGE


def register(subparsers: Any) -> None:
    dead = add_command(
        subparsers,
        "dead-letters",
        "list, requeue or purge messages the server rejected",
        "  durable-analytics dead-letters list --queue /var/lib/myapp/analytics.sqlite3\n"
        "  durable-analytics dead-letters requeue --all --queue /var/lib/myapp/analytics.sqlite3",
        lambda args: _missing_action(dead),
    )
    actions = dead.add_subparsers(dest="action", metavar="ACTION")
    queue_options = shared_options("queue", "write_key")
    listing = add_command(
        actions,
        "list",
        "show dead letters with their HTTP status and reason, oldest first",
        "  durable-analytics dead-letters list --queue q.sqlite3 --limit 20",
        cmd_list,
        [queue_options],
    )
    listing.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="show at most N (100)"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    for name, summary, handler, example in (
        (
            "requeue",
            "make dead letters ready again, after fixing what made the server reject them",
            cmd_requeue,
            "  durable-analytics dead-letters requeue --all --queue q.sqlite3\n"
            "  durable-analytics dead-letters requeue --id 12 --id 13 --queue q.sqlite3",
        ),
        (
            "purge",
            "delete dead letters for good (asks for confirmation unless --yes)",
            cmd_purge,
            "  durable-analytics dead-letters purge --older-than 2592000 --yes --queue q.sqlite3",
        ),
    ):
        action = add_command(actions, name, summary, example, handler, [queue_options])
        _selector_options(action)
        action.add_argument("--json", action="store_true", help="print the count as JSON")
        if name == "purge":
            action.add_argument("--yes", "-y", action="store_true", help="do not ask")


def _selector_options(action: argparse.ArgumentParser) -> None:
    chosen = action.add_argument_group("which dead letters")
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument(
        "--id",
        dest="ids",
        type=positive_int,
        action="append",
        metavar="N",
        help="the dead letter with this id (repeatable; ids from `dead-letters list`)",
    )
    chosen.add_argument(
        "--older-than",
        type=non_negative_float,
        metavar="SECONDS",
        help="dead letters rejected at least this long ago",
    )
