"""``durable-analytics collect``: the loopback collector in the foreground, printing what it
accepts."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any, Callable, Dict

from .options import (
    ENV_WRITE_KEY,
    EXIT_OK,
    CommandError,
    add_command,
    port,
    positive_int,
    resolve_write_key,
)
from .signals import stopping_on_signals

DEFAULT_HOST = "127.0.0.1"


def event_line(message: Dict[str, Any]) -> str:
    """One message as one line: type, messageId, who, and what."""
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


def network_of(args: argparse.Namespace) -> Any:
    """The ``--delay`` / ``--fault-rate`` / ``--seed`` network, or a clear error."""
    from ..testing import Network

    try:
        return Network(delay=args.delay, fault_rate=args.fault_rate, seed=args.seed)
    except ValueError as exc:
        raise CommandError(f"collect: {exc}") from None


def cmd_collect(args: argparse.Namespace) -> int:
    from ..testing import Collector
    from ..testing.feed import DEFAULT_FEED_SIZE

    collector = Collector(
        resolve_write_key(args, required=False),
        host=args.host,
        port=args.port,
        out=args.out,
        on_message=_printer(args.json),
        network=network_of(args),
        keep=args.keep or DEFAULT_FEED_SIZE,
        debugger=True,
    )
    try:
        collector.start()
    except OSError as exc:
        target = (
            f"--out {args.out}"
            if exc.filename is not None
            else f"--port {args.port}"
            + ("" if args.host == DEFAULT_HOST else f" and --host {args.host}")
        )
        raise CommandError(
            f"cannot start the collector ({exc.strerror or exc}): check {target}"
        ) from None
    stop = threading.Event()
    try:
        with stopping_on_signals(stop):
            sys.stderr.write(
                f"collect: listening on {collector.url} (point applications at --endpoint "
                f"{collector.url}); debugger page at {collector.url}/; Ctrl-C to stop\n"
            )
            sys.stderr.flush()
            while not stop.wait(0.2):
                pass
    finally:
        collector.stop()
    counts = collector.counts
    sys.stderr.write(
        f"collect: stopped; {counts.events:,} event(s) in "
        f"{counts.requests:,} request(s), {counts.duplicates:,} duplicate(s), "
        f"{collector.network_faults:,} injected fault(s)\n"
    )
    return EXIT_OK


def _printer(as_json: bool) -> Callable[[Dict[str, Any]], None]:
    """Each accepted message on stdout, one line each, whole lines even from many threads."""
    lock = threading.Lock()

    def show(message: Dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False) if as_json else event_line(message)
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    return show


def register(subparsers: Any) -> None:
    collect = add_command(
        subparsers,
        "collect",
        "run a local Segment-compatible collector and print what it receives",
        "  durable-analytics collect --port 8765 --out events.jsonl\n"
        "  durable-analytics collect --delay 0.2 --fault-rate 0.2   # a far, flaky server\n"
        "  # elsewhere: durable-analytics track --endpoint http://127.0.0.1:8765 ...",
        cmd_collect,
        description=(
            "Run the loopback collector (POST /v1/batch, on 127.0.0.1 by default) in the "
            "foreground and "
            "print each event it accepts, one line each. The same port serves a debugger "
            "page at / showing the events as they arrive. Ctrl-C or SIGTERM stops it."
        ),
    )
    collect.add_argument(
        "--port", type=port, default=8765, metavar="PORT", help="port (default 8765; 0: any free)"
    )
    collect.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="ADDRESS",
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; the page "
        "shows event contents to whoever can reach it)",
    )
    collect.add_argument(
        "--keep",
        type=positive_int,
        metavar="N",
        help="events the page keeps (default 1,000; counts stay exact)",
    )
    collect.add_argument("--json", action="store_true", help="print each message as JSON")
    collect.add_argument("--out", metavar="FILE", help="also append each message to FILE (JSONL)")
    collect.add_argument(
        "--write-key",
        metavar="KEY",
        help=f"accept only this write key (env {ENV_WRITE_KEY}; default: any key)",
    )
    _network_options(collect)


def _network_options(parser: argparse.ArgumentParser) -> None:
    """A far or flaky server: see :class:`~durable_analytics.testing.Network`."""
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold every batch request this long before answering (a round trip; default 0)",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="answer this share of batch requests 500, at random (0 to 1; default 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed of --fault-rate, so a run can be repeated (default 0)",
    )
