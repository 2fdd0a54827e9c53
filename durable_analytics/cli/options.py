"""Shared option handling for every subcommand: where each setting comes from (the flag, then
the environment, then the library's default), the argparse value types, the parent parsers
that declare the shared flags, and how a subcommand is added.

Kept in one module so that a new setting or a new subcommand is declared in one place.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, Tuple

from ..config import DEFAULT_ENDPOINT, check_endpoint
from ..environment import ENV_ENDPOINT, ENV_QUEUE, ENV_WRITE_KEY
from ..errors import ConfigError
from ..paths import default_queue_path

PROG = "durable-analytics"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = """\
exit status:
  0    done (drain: the queue was emptied)
  1    runtime failure: messages left (server unreachable, timeout), not delivered, lost
  2    usage or configuration error: a bad or missing setting, an invalid event, a bad file
  130  interrupted (Ctrl-C or SIGTERM); what was not sent stays queued"""

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A problem the command reports in one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------
# Settings: flag, then environment, then the library's default


def setting(flag: Optional[str], flag_name: str, env: str) -> Tuple[Optional[str], str]:
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
    value, _ = setting(getattr(args, "write_key", None), "--write-key", ENV_WRITE_KEY)
    if value is None and required:
        raise CommandError(f"no write key: pass --write-key or set {ENV_WRITE_KEY}")
    return value


def resolve_endpoint(args: argparse.Namespace) -> str:
    value, source = setting(getattr(args, "endpoint", None), "--endpoint", ENV_ENDPOINT)
    try:
        return check_endpoint(value if value is not None else DEFAULT_ENDPOINT)
    except ConfigError as exc:
        raise CommandError(f"{exc} (set by {source})") from None


def resolve_queue(args: argparse.Namespace, write_key: Optional[str], *, must_exist: bool) -> Path:
    """``--queue``, ``$DURABLE_ANALYTICS_QUEUE``, or the default file for the write key."""
    value, source = setting(getattr(args, "queue", None), "--queue", ENV_QUEUE)
    if value is not None:
        path = Path(value).expanduser()
    elif write_key is not None:
        path = default_queue_path(write_key, resolve_endpoint(args))
        source = "the default file for this write key and endpoint"
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


def existing_queue(args: argparse.Namespace) -> Path:
    """The queue file of a command that only reads one: the write key only names it."""
    return resolve_queue(args, resolve_write_key(args, required=False), must_exist=True)


# --------------------------------------------------------------------------------------------
# Value types


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def positive_float(text: str) -> float:
    value = _seconds(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive number of seconds")
    return value


def non_negative_float(text: str) -> float:
    value = _seconds(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of seconds >= 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive whole number")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: use a port from 0 to 65535")
    return value


# --------------------------------------------------------------------------------------------
# Parsers


class Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def shared_options(*names: str) -> argparse.ArgumentParser:
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


def add_command(
    subparsers: Any,
    name: str,
    summary: str,
    example: str,
    handler: Handler,
    parents: Sequence[argparse.ArgumentParser] = (),
    description: Optional[str] = None,
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary, wrapped description and example epilog."""
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
