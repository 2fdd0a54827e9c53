"""Group commit and buffered mode under real kills, exits and exceptions.

A child process records events from many threads and writes each returned ``messageId`` to
stdout only after the call returned (one ``os.write`` per line, atomic on a pipe). Nothing
listens at the endpoint and the worker never sends on its own, so every stored message stays
in the file, where the test reads it after the child is gone.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import List

import pytest
from reliability_helpers import PROCESS_TIMEOUT, child_environment

CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from durable_analytics import Client
    mode, queue, threads, per, ending, interval = sys.argv[1:7]
    if ending == "sigterm":  # the application's handler: leave through the exit hooks
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    client = Client("commit-key", endpoint="http://127.0.0.1:9", queue_path=queue,
                    durability=mode, buffer_interval=float(interval), exit_timeout=0,
                    flush_interval=3600, flush_at=10**6,
                    handle_sigterm=ending == "stop-handler")
    props = {"plan": "Enterprise", "amount": 42.5}

    def record(thread):
        for i in range(int(per)):
            message_id = client.track("user-%d" % thread, "Order Completed", props).message_id
            os.write(1, (message_id + "\\n").encode())

    workers = [threading.Thread(target=record, args=(t,)) for t in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if ending == "flush":
        client.flush(timeout=0.01)
        os.write(1, b"#flushed\\n")
    if ending in ("flush", "sigterm", "stop-handler"):
        os.write(1, b"#waiting\\n")
        while True:
            signal.pause()  # until killed
    if ending == "raise":
        raise RuntimeError("the application failed")
    """
)


# Held messages are committed only by what a test exercises (exit, flush), never by the
# timer, as long as fewer than the 500 that trigger a commit are held.
NEVER = 3600.0
HELD = (8, 50)  # threads, calls each


def _start(
    tmp_path: Path, mode: str, threads: int, per: int, ending: str, interval: float = 0.005
) -> subprocess.Popen:
    queue = tmp_path / "queue" / "events.sqlite3"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            mode,
            str(queue),
            str(threads),
            str(per),
            ending,
            str(interval),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(),
        text=True,
    )


def _stored_ids(tmp_path: Path) -> List[str]:
    """Every messageId in the file, in row order."""
    queue = tmp_path / "queue" / "events.sqlite3"
    with sqlite3.connect(str(queue)) as conn:
        rows = conn.execute(
            "SELECT data FROM (SELECT id, data FROM messages UNION ALL "
            "SELECT id, data FROM dead_letters) ORDER BY id"
        ).fetchall()
    return [json.loads(data)["messageId"] for (data,) in rows]


def _read_until_killed(process: subprocess.Popen, lines: int) -> List[str]:
    """Read returned ids until ``lines`` arrived, SIGKILL the child, then read what is left."""
    assert process.stdout is not None
    printed = []
    while len(printed) < lines:
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "child ended early"
        printed.append(line.strip())
    return printed + _kill(process)


def _kill(process: subprocess.Popen) -> List[str]:
    """SIGKILL the child; return the lines it wrote that were not read yet (read through the
    same buffered stream: ``communicate`` would skip what that stream already buffered)."""
    assert process.stdout is not None and process.stderr is not None
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=PROCESS_TIMEOUT) == -signal.SIGKILL
    rest = process.stdout.read()
    process.stdout.close()
    process.stderr.close()
    return [line for line in rest.splitlines() if line.strip()]


def test_kill_9_under_16_threads_loses_no_returned_call(tmp_path: Path) -> None:
    process = _start(tmp_path, "normal", threads=16, per=100_000, ending="run")
    printed = _read_until_killed(process, lines=4000)
    stored = set(_stored_ids(tmp_path))
    assert len(printed) >= 4000 and len(set(printed)) == len(printed)
    assert [mid for mid in printed if mid not in stored] == []


@pytest.mark.parametrize("ending, exit_code", [("exit", 0), ("raise", 1)])
def test_buffered_mode_loses_nothing_at_a_normal_exit_or_an_exception(
    tmp_path: Path, ending: str, exit_code: int
) -> None:
    process = _start(tmp_path, "buffered", *HELD, ending=ending, interval=NEVER)
    out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == exit_code, err
    printed = out.split()
    assert len(printed) == HELD[0] * HELD[1]
    assert sorted(_stored_ids(tmp_path)) == sorted(printed)


def test_buffered_mode_loses_nothing_that_flush_returned_after(tmp_path: Path) -> None:
    process = _start(tmp_path, "buffered", *HELD, ending="flush", interval=NEVER)
    printed = _read_until_killed(process, lines=HELD[0] * HELD[1] + 2)
    assert printed[-2:] == ["#flushed", "#waiting"]
    assert sorted(_stored_ids(tmp_path)) == sorted(printed[:-2])


@pytest.mark.parametrize(
    "ending, exit_code",
    [("stop-handler", -signal.SIGTERM), ("sigterm", 0)],
    ids=["the library's stop handler", "an application handler that exits"],
)
def test_buffered_mode_loses_nothing_at_sigterm_with_a_stop_handler(
    tmp_path: Path, ending: str, exit_code: int
) -> None:
    process = _start(tmp_path, "buffered", *HELD, ending=ending, interval=NEVER)
    assert process.stdout is not None
    printed = [process.stdout.readline().strip() for _ in range(HELD[0] * HELD[1] + 1)]
    assert _stored_ids(tmp_path) == []  # all held: only the exit can commit them
    assert printed[-1] == "#waiting"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=PROCESS_TIMEOUT) == exit_code
    process.stdout.close()
    process.stderr.close()  # type: ignore[union-attr]
    assert sorted(_stored_ids(tmp_path)) == sorted(printed[:-1])


def test_buffered_mode_kill_9_loses_only_the_newest_calls(tmp_path: Path) -> None:
    """What a kill can lose in buffered mode is the tail not yet committed: the file holds
    the returned calls in order, up to some point, and nothing after a gap."""
    process = _start(tmp_path, "buffered", threads=1, per=10_000_000, ending="run")
    assert process.stdout is not None
    printed: List[str] = []
    while len(printed) < 2000 or len(printed) % 500 or not _committed_any(tmp_path):
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "child ended early"
        printed.append(line.strip())
    printed += _kill(process)
    stored = _stored_ids(tmp_path)
    assert stored, "the background commits stored nothing before the kill"
    # At most one call more than printed: the kill may fall between its return and its print.
    assert len(stored) <= len(printed) + 1
    assert stored[: len(printed)] == printed[: len(stored)]


def _committed_any(tmp_path: Path) -> bool:
    try:
        return bool(_stored_ids(tmp_path))
    except sqlite3.Error:
        return False


def test_a_lone_thread_and_sixteen_threads_give_each_call_its_own_committed_row(
    make_client, queue_file: Path
) -> None:
    # Nothing listens there: every stored message stays in the file (a full batch is sent
    # whatever flush_at says).
    client = make_client(endpoint="http://127.0.0.1:9", flush_at=10**6, flush_interval=3600)
    returned: List[str] = []

    def record() -> None:
        for _ in range(200):
            returned.append(client.track("u", "Threaded").message_id)

    threads = [threading.Thread(target=record) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with sqlite3.connect(str(queue_file)) as conn:
        stored = [json.loads(d)["messageId"] for (d,) in conn.execute("SELECT data FROM messages")]
    assert sorted(stored) == sorted(returned) and len(set(returned)) == 16 * 200
    assert client._committer.counts.committed == 16 * 200
