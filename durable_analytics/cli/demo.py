"""``durable-analytics demo``: record events in a child process, SIGKILL it, restart, drain,
and show that nothing was lost; ``demo-child`` is the hidden child it runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from .._version import __version__
from ..client import Client
from ..retry import RetryPolicy
from ..store import MessageStore
from .drain import DrainResult, drain_queue
from .options import (
    ENV_ENDPOINT,
    ENV_QUEUE,
    ENV_WRITE_KEY,
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    add_command,
    positive_int,
    resolve_write_key,
    shared_options,
)
from .output import one_line

if TYPE_CHECKING:
    from ..testing import Collector

DEMO_WRITE_KEY = "demo-write-key"
DEMO_EVENTS = 3000
_DEMO_POLICY = RetryPolicy(initial=0.05, maximum=0.5)


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
    from ..testing import Collector

    started = time.monotonic()
    total = args.events
    kill_after = args.kill_after if args.kill_after is not None else total // 2
    if not 0 < kill_after < total:
        raise CommandError("--kill-after must be between 1 and --events - 1")
    workdir = Path(tempfile.mkdtemp(prefix="durable-analytics-demo-"))  # 0700
    queue = workdir / "queue.sqlite3"
    collector = Collector(DEMO_WRITE_KEY).start()
    try:
        print(f"durable-analytics demo {__version__}: no account, no network")
        print(f"  collector  {collector.url} (loopback, in this process)")
        print(f"  queue      {queue} (fresh; removed afterwards)")
        recorded = _record(queue, collector, total, kill_after, workdir / "children.log")
        drained = _drain(queue, collector.url)
        print(f"  {drained.summary()}")
        return _report(recorded, total, collector, started)
    finally:
        collector.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _record(
    queue: Path, collector: Collector, total: int, kill_after: int, log_file: Path
) -> Set[str]:
    """Child 1 records and is killed partway; child 2 records the rest. The ids recorded."""
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

    one = _run_child(child(0, total), env, kill_after, log_file)
    at_kill = len(collector.message_ids)
    if one.killed:
        print(
            f"  child 1    pid {one.pid}: {len(one.ids):,} track() calls returned, then "
            f"SIGKILL ({at_kill:,} delivered by then)"
        )
    elif one.returncode == 0:
        print(f"  child 1    pid {one.pid}: recorded {len(one.ids):,} events, exited first")
    else:
        _child_failed(1, one, log_file)
    rest = total - len(one.ids)
    two = _ChildRun(0, [], False, 0)
    if rest > 0:
        two = _run_child(child(len(one.ids), rest), env, None, log_file)
        if two.returncode != 0:
            _child_failed(2, two, log_file)
        print(
            f"  child 2    pid {two.pid}: recorded the other {len(two.ids):,} events, "
            "exited without waiting for delivery"
        )
    return set(one.ids) | set(two.ids)


def _drain(queue: Path, url: str) -> DrainResult:
    from ..transport import Transport

    store = MessageStore.open(queue)
    transport = Transport(DEMO_WRITE_KEY, url, timeout=5.0)
    try:
        return drain_queue(store, transport, timeout=30.0, policy=_DEMO_POLICY)
    finally:
        transport.close()
        store.close()


def _report(recorded: Set[str], total: int, collector: Collector, started: float) -> int:
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


def _child_failed(number: int, run: _ChildRun, log_file: Path) -> None:
    detail = one_line(log_file.read_text(errors="replace"))[-500:]
    raise CommandError(
        f"demo child {number} exited with status {run.returncode}: {detail}", EXIT_FAILURE
    )


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
        retry_policy=_DEMO_POLICY,
    )
    out = sys.stdout
    for number in range(args.first, args.first + args.count):
        message_id = client.track(
            user_id=f"demo-user-{number % 25}",
            event="Demo Event",
            properties={"n": number},
        ).message_id
        out.write(f"{message_id}\n")
        out.flush()
    client.shutdown(timeout=0)
    return EXIT_OK


def register(subparsers: Any) -> None:
    demo = add_command(
        subparsers,
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
    demo.add_argument("--events", type=positive_int, default=DEMO_EVENTS, help=argparse.SUPPRESS)
    demo.add_argument("--kill-after", type=positive_int, help=argparse.SUPPRESS)

    child = subparsers.add_parser("demo-child", parents=[shared_options("write_key")])
    child.set_defaults(handler=cmd_demo_child)
    child.add_argument("--queue", required=True)
    child.add_argument("--endpoint", required=True)
    child.add_argument("--first", type=int, default=0)
    child.add_argument("--count", type=int, required=True)
