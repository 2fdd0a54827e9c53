"""``durable-analytics track | identify | page | screen | group | alias``: events from the
shell, validated and committed to the queue file before the command returns."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional

from ..client import Client
from ..errors import RejectedError
from ..messages import Alias, Encoder, Group, Identify, Message, Page, Screen, Track
from .options import (
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    add_command,
    positive_float,
    resolve_endpoint,
    resolve_queue,
    resolve_write_key,
    shared_options,
)
from .output import one_line, setup_logging

_NEVER = 10.0**9  # a flush interval that never comes: shell events are stored, not sent

KINDS = ("track", "identify", "page", "screen", "group", "alias")
_EXAMPLES = {
    "track": "durable-analytics track --user-id 42 --event 'Backup Finished' "
    "--properties '{\"gigabytes\": 12}'",
    "identify": 'durable-analytics identify --user-id 42 --traits \'{"plan": "pro"}\'',
    "page": "durable-analytics page --user-id 42 --name Pricing --properties "
    '\'{"path": "/pricing"}\'',
    "screen": "durable-analytics screen --anonymous-id a1b2 --name Settings",
    "group": "durable-analytics group --user-id 42 --group-id acme --traits '{\"seats\": 20}'",
    "alias": "durable-analytics alias --previous-id a1b2 --user-id 42",
}
_SUMMARIES = {
    "track": "record an action a user performed",
    "identify": "tie a user to their traits",
    "page": "record a page view",
    "screen": "record a mobile screen view",
    "group": "associate a user with a group",
    "alias": "link a previous id to a user id",
}


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
    setup_logging(False)
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
        message_id = client.enqueue(message).message_id
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
        why = f" (last error: {one_line(last_error)})" if last_error else ""
        raise CommandError(
            f"not delivered within {args.timeout:g}s{why}; it stays queued in {path} for "
            "`durable-analytics drain`",
            EXIT_FAILURE,
        )
    if message_id in rejected:
        raise CommandError(
            f"the server rejected it ({one_line(rejected[message_id])}); it is kept as a "
            "dead letter: `durable-analytics dead-letters list`",
            EXIT_FAILURE,
        )
    return EXIT_OK


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
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="with --flush: how long to wait (default 10)",
    )


def register(subparsers: Any) -> None:
    for kind in KINDS:
        event = add_command(
            subparsers,
            kind,
            f"{_SUMMARIES[kind]} (stored at once; prints the messageId)",
            "  " + _EXAMPLES[kind],
            cmd_event,
            [shared_options("queue", "write_key", "endpoint")],
            description=(
                f"{_SUMMARIES[kind].capitalize()}. The event is validated and committed "
                "to the queue file, its messageId printed, and the command returns at once; "
                "the applications' workers or `durable-analytics drain` deliver it. --flush "
                "waits for delivery instead."
            ),
        )
        _event_options(event, kind)
