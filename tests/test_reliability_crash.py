"""Crash: producers SIGKILLed at random moments lose nothing that a call returned.

Real child processes record numbered events while their worker uploads; each id is written
out only after the call returned. They are killed during appends, during uploads and while
the collector holds an accepted batch unanswered (between the server's accept and the
client's ack). The next process on the file, then a drain, must deliver every returned id;
the only duplicates allowed are whole batches that were in flight at a kill (a process keeps up
to `max_in_flight` on the wire).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from reliability_helpers import (
    APPENDED,
    WRITE_KEY,
    child_environment,
    crash_campaign,
    drain_library,
    helper_command,
    read_ids,
    suite_seed,
    wait_for_marker,
)

from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Response
from durable_analytics.worker import DEFAULT_MAX_IN_FLIGHT

KILLS = 20
MAX_BATCH = 20


def test_random_sigkills_lose_no_returned_event(tmp_path: Path) -> None:
    seed = suite_seed()
    report = crash_campaign(
        tmp_path,
        seed=seed,
        kills=KILLS,
        lanes=2,
        max_batch_messages=MAX_BATCH,
        cli_drain_lanes=(0,),
        log=print,
    )
    summary = report.as_dict()
    print(summary)
    why = f"seed={seed}: {summary}"

    assert report.kills == KILLS, why
    assert all(run.exit_code == -signal.SIGKILL for run in report.runs), why
    assert len(report.returned) > 0, why
    assert report.lost == [], why
    # An id delivered without having been returned can only be the call the kill cut short.
    assert report.unexpected == [], why
    # Redeliveries: whole batches the server accepted just before a kill, at most the uploads
    # a process keeps in flight per kill.
    assert report.unattributed == [], why
    assert all(batch["whole_batch"] for batch in report.wasted_batches), why
    assert report.duplicates == sum(b["redelivered"] for b in report.wasted_batches), why
    assert report.duplicates <= report.kills * MAX_BATCH * DEFAULT_MAX_IN_FLIGHT, why
    assert all(
        lane == {"ready": 0, "leased": 0, "dead": 0} for lane in report.leftovers.values()
    ), why
    for drain in report.drains:
        assert drain.get("emptied") is True, why
        if drain["by"] == "cli":
            assert drain["exit_code"] == 0, why
    assert report.collector_errors == [], why


def _producer(queue: Path, collector: Collector, ids_file: Path, count: int) -> subprocess.Popen:
    """One producer that sends all its events as one batch, then waits to be killed."""
    return subprocess.Popen(
        helper_command(
            "produce",
            "--queue",
            queue,
            "--endpoint",
            collector.url,
            "--ids",
            ids_file,
            "--prefix",
            "held",
            "--count",
            count,
            "--flush-at",
            count,
            "--max-batch",
            count,
            "--hold",
        ),
        env=child_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    if process.stderr is not None:
        process.stderr.close()


def test_kill_after_the_server_accepted_redelivers_exactly_that_batch(tmp_path: Path) -> None:
    """The worst moment: the server has the batch, the client dies before its ack."""
    accepted, release = threading.Event(), threading.Event()

    def hold_first_batch(message: Any) -> None:
        if not accepted.is_set():
            accepted.set()
            release.wait(20)

    queue, ids_file = tmp_path / "q" / "events.sqlite3", tmp_path / "held.ids"
    with Collector(WRITE_KEY, on_message=hold_first_batch) as collector:
        process = _producer(queue, collector, ids_file, 30)
        try:
            assert accepted.wait(30), "the producer never uploaded"
            _kill(process)
        finally:
            release.set()
            if process.poll() is None:
                process.kill()
        returned, _ = read_ids(ids_file)
        assert len(returned) == 30
        assert collector.message_ids == set(returned)  # accepted, never acknowledged

        store = MessageStore(queue)
        assert store.stats().leased == 30  # still held by the dead process
        store.close()
        assert drain_library(queue, collector.url)

        assert collector.message_ids == set(returned)
        assert collector.duplicates == 30
        first, second = (r.payload["batch"] for r in collector.requests if r.status == 200)
        assert [m["messageId"] for m in first] == [m["messageId"] for m in second] == returned


def _retried_and_leased(queue: Path) -> int:
    """Rows leased again after one failed attempt: the retry is about to go out."""
    conn = sqlite3.connect(str(queue))
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM messages m JOIN leases l ON m.id BETWEEN l.lo AND l.hi "
            "WHERE m.attempts >= 1"
        ).fetchone()[0]
    finally:
        conn.close()


def test_kill_while_the_server_is_still_answering_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Killed mid-request, before the server accepted: the lease goes back, sent once."""
    queue, ids_file = tmp_path / "q" / "events.sqlite3", tmp_path / "held.ids"
    with Collector(WRITE_KEY) as collector:
        # The first attempt fails at once; the retry is held by the server for 1.5 s.
        collector.respond_with(Response(503), Response(503, delay=1.5))
        process = _producer(queue, collector, ids_file, 25)
        store = MessageStore(queue)
        try:
            wait_for_marker(ids_file, APPENDED, process, 30)
            deadline = time.monotonic() + 30
            while _retried_and_leased(queue) < 25 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert _retried_and_leased(queue) == 25, "the retry was never leased"
            time.sleep(0.3)  # the retry is on the wire, inside the server's 1.5 s
            _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
        returned, _ = read_ids(ids_file)
        assert len(returned) == 25
        assert collector.message_ids == set()
        assert drain_library(queue, collector.url)
        assert collector.message_ids == set(returned)
        # The held retry reached the server and was answered (to nobody) without accepting.
        assert collector.wait_for_requests(3, timeout=10)
        assert sorted(r.status for r in collector.requests) == [200, 503, 503]
        assert collector.duplicates == 0
        stats = store.stats()
        assert (stats.ready, stats.leased, stats.dead) == (0, 0, 0)
        store.close()
