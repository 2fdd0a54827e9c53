"""The ``durable-analytics`` command: drain, stats, dead letters, events from the shell, the
local collector and the demo.

A thin layer over the library. Settings resolve as flags, then the environment
(``DURABLE_ANALYTICS_WRITE_KEY``, ``DURABLE_ANALYTICS_ENDPOINT``, ``DURABLE_ANALYTICS_QUEUE``),
then the library's defaults (see :mod:`.options`). Every subcommand opens the same queue file
the applications use: ``drain`` is one more :class:`~durable_analytics.worker.Worker` taking
from it, so it follows the same batching, backoff, ``Retry-After`` and dead-letter rules and is
safe to run next to them. Exit status: 0 done, 1 runtime failure (messages left, not
delivered), 2 usage or configuration error; see ``docs/cli.md``.

This module is the entry point only; each subcommand (or group) lives in its own module and
declares its own options in a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Optional, Sequence

from .._version import __version__
from ..config import DEFAULT_ENDPOINT
from ..errors import AnalyticsError, ConfigError, QueueCorrupt, ValidationError
from . import collect, dead_letters, demo, drain, events, stats
from .drain import DrainResult, drain_queue
from .options import (
    ENV_ENDPOINT,
    ENV_QUEUE,
    ENV_WRITE_KEY,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    PROG,
    CommandError,
    Parser,
)
from .output import fail

__all__ = ["main", "build_parser", "drain_queue", "DrainResult"]

# In the order `--help` lists them.
_COMMANDS = (drain, stats, dead_letters, events, collect, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    for command in _COMMANDS:
        command.register(sub)
    return parser


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
        fail(exc.message)
        return exc.status
    except (ConfigError, ValidationError, QueueCorrupt) as exc:
        fail(str(exc))
        return EXIT_USAGE
    except AnalyticsError as exc:
        fail(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        fail("interrupted; whatever was not sent stays queued")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): exit quietly, without a second error at shutdown.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
