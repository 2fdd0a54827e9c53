"""The queue's bounds hold exactly: ``max_queue_bytes`` (the file's pages holding data) and
``max_queue_messages`` (queued messages and dead letters), with messages up to the largest a
client may be configured for, and with several processes appending at once, under each
overflow policy. docs/design.md ("Bounded queue") states the tolerance these tests measure: 0.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import run_python

from durable_analytics.errors import QueueFull
from durable_analytics.store import OVERFLOW_POLICIES, MessageStore

MESSAGE_BYTES = 40_000  # past the default 32,000 limit; a client may allow up to 500,000
PROCESSES = 8


def message(n: int, size: int = MESSAGE_BYTES) -> Tuple[str, int]:
    """A JSON object of exactly ``size`` bytes."""
    head = json.dumps({"type": "track", "n": n, "pad": ""})
    data = head[:-2] + "x" * (size - len(head)) + '"}'
    assert len(data) == size
    return data, size


def held(path: Path) -> Dict[str, int]:
    """What the file holds, read through a plain connection: messages, their bytes, pages."""
    conn = sqlite3.connect(str(path))
    try:
        count, total = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages"
        ).fetchone()
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        pages, free, page = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        dropped = conn.execute("SELECT dropped FROM state").fetchone()[0]
    finally:
        conn.close()
    return {
        "messages": count + dead,
        "bytes": total,
        "used": (pages - free) * page,
        "dropped": dropped,
    }


@pytest.mark.parametrize("size", [MESSAGE_BYTES, 200_000])
@pytest.mark.parametrize("overflow", OVERFLOW_POLICIES)
def test_the_byte_bound_holds_with_messages_larger_than_the_default_limit(
    queue_file: Path, overflow: str, size: int
) -> None:
    limit = 2_000_000
    store = MessageStore.open(queue_file, max_queue_bytes=limit, overflow=overflow)
    refused = 0
    offered = 3 * limit // size
    try:
        for n in range(offered):
            try:
                store.append(*message(n, size))
            except QueueFull:
                refused += 1
    finally:
        store.close()
    after = held(queue_file)
    assert after["used"] <= limit
    assert after["bytes"] <= limit
    stored = after["messages"]
    assert stored >= limit // (size * 2)  # the bound is not met by storing nothing
    if overflow == "raise":
        assert refused == offered - stored and after["dropped"] == 0
    else:
        assert refused == 0 and after["dropped"] == offered - stored


def test_a_batch_append_holds_the_byte_bound_too(queue_file: Path) -> None:
    limit = 1_000_000
    store = MessageStore.open(queue_file, max_queue_bytes=limit, overflow="drop_newest")
    try:
        ids = store.append_many([message(n) for n in range(60)])
    finally:
        store.close()
    after = held(queue_file)
    assert after["used"] <= limit and 0 < len(ids) == after["messages"] < 60
    assert after["dropped"] == 60 - len(ids)


# Appends its share as fast as it can once every process is ready; prints what happened.
APPENDER = """
import json, sys, time
from pathlib import Path
from durable_analytics.errors import QueueFull
from durable_analytics.store import MessageStore
path, options, count, size, start = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4]), Path(sys.argv[5])
store = MessageStore.open(path, **options)
pad = "x" * (size - 40)
print("ready", flush=True)
while not start.exists():
    time.sleep(0.001)
stored = refused = 0
for n in range(count):
    data = json.dumps({"type": "track", "n": n, "pad": pad})
    try:
        if store.append(data, len(data)) is not None:
            stored += 1
    except QueueFull:
        refused += 1
store.close()
print(json.dumps({"stored": stored, "refused": refused}), flush=True)
"""


def run_appenders(
    path: Path, tmp_path: Path, env: Dict[str, str], options: Dict[str, Any], count: int, size: int
) -> List[Dict[str, int]]:
    MessageStore.open(path, **options).close()  # the file exists before the race starts
    start = tmp_path / "start"
    procs = [
        subprocess.Popen(
            run_python(APPENDER, str(path), json.dumps(options), str(count), str(size), str(start)),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("overflow", OVERFLOW_POLICIES)
def test_the_message_bound_holds_with_eight_processes_appending_at_once(
    queue_file: Path, tmp_path: Path, child_env: Dict[str, str], overflow: str
) -> None:
    options = {"max_queue_messages": 1_000, "overflow": overflow}
    results = run_appenders(queue_file, tmp_path, child_env, options, 250, 100)
    after = held(queue_file)
    assert after["messages"] <= 1_000
    offered = PROCESSES * 250
    if overflow == "raise":
        assert after["messages"] == 1_000
        assert sum(r["refused"] for r in results) == offered - 1_000
    elif overflow == "drop_oldest":
        assert after["messages"] == 1_000 and after["dropped"] == offered - 1_000
    else:
        assert sum(r["stored"] for r in results) == after["messages"] == 1_000
        assert after["dropped"] == offered - 1_000


@pytest.mark.parametrize("overflow", OVERFLOW_POLICIES)
def test_the_byte_bound_holds_with_eight_processes_appending_40_kb_messages(
    queue_file: Path, tmp_path: Path, child_env: Dict[str, str], overflow: str
) -> None:
    limit = 2_000_000
    options = {"max_queue_bytes": limit, "overflow": overflow}
    run_appenders(queue_file, tmp_path, child_env, options, 20, MESSAGE_BYTES)  # 6.4 MB
    after = held(queue_file)
    assert after["used"] <= limit and after["bytes"] <= limit
    assert after["messages"] >= limit // (MESSAGE_BYTES * 2)


def test_drop_oldest_drops_the_new_message_when_everything_older_is_leased(
    queue_file: Path,
) -> None:
    """A lease in flight is never dropped; if it alone fills the queue, the new message is
    dropped instead (and counted), so that the bound still holds."""
    store = MessageStore.open(queue_file, max_queue_messages=3, overflow="drop_oldest")
    try:
        store.append_many([message(n, 100) for n in range(3)])
        owner = store.new_owner()
        assert store.lease(owner, max_messages=3, max_bytes=10**9, lease_seconds=60)
        assert store.append(*message(3, 100)) is None
        assert store.append_many([message(4, 100), message(5, 100)]) == []
    finally:
        store.close()
    after = held(queue_file)
    assert (after["messages"], after["dropped"]) == (3, 3)


def test_a_full_file_is_still_leased_settled_and_then_takes_appends_again(
    queue_file: Path,
) -> None:
    """SQLite enforces the byte bound on the appends (a page cap); the worker's own writes
    (leases, acks, moves to dead letters) still go through at the bound, and once they have
    freed room the appends are taken again, still within the bound."""
    limit = 400_000
    store = MessageStore.open(queue_file, max_queue_bytes=limit, overflow="drop_newest")
    try:
        while store.append(*message(0, 4_000)) is not None:
            pass
        owner = store.new_owner()
        first = store.lease(owner, max_messages=10, max_bytes=10**9, lease_seconds=60)
        assert first is not None
        assert store.dead_letter(owner, first.ids, http_status=400, reason="bad") == 10
        while True:
            lease = store.lease(owner, max_messages=20, max_bytes=10**9, lease_seconds=60)
            if lease is None:
                break
            assert store.ack(lease.ids) == len(lease.ids)
        taken = sum(store.append(*message(n, 4_000)) is not None for n in range(200))
    finally:
        store.close()
    after = held(queue_file)
    assert after["used"] <= limit
    assert 0 < taken < 200 and after["messages"] == taken + 10  # and the dead letters


def test_group_appends_hold_the_byte_bound_under_each_policy(queue_file: Path) -> None:
    limit = 300_000
    for overflow in OVERFLOW_POLICIES:
        store = MessageStore.open(queue_file, max_queue_bytes=limit, overflow=overflow)
        try:
            for start in range(0, 400, 40):
                try:
                    store.append_many([message(n, 2_000) for n in range(start, start + 40)])
                except QueueFull:
                    assert overflow == "raise"
        finally:
            store.close()
        after = held(queue_file)
        assert after["used"] <= limit and after["messages"] >= limit // 4_000, overflow
        queue_file.unlink()


def test_a_lowered_byte_bound_is_held_once_the_file_is_past_it(queue_file: Path) -> None:
    """A file already larger than a new bound cannot be capped (SQLite never caps below the
    file's size), and its free pages must not be filled: the appends then check the bound in
    their statement (drop_newest: the file keeps what it held, and takes nothing more)."""
    store = MessageStore.open(queue_file, max_queue_bytes=2_000_000, overflow="drop_newest")
    try:
        store.append_many([message(n, 4_000) for n in range(300)])  # 1.2 MB
        lease = store.lease(store.new_owner(), max_messages=150, max_bytes=10**9, lease_seconds=9)
        assert lease is not None and store.ack(lease.ids) == 150  # free pages, 600 KB used
        before = held(queue_file)["used"]
        store.max_queue_bytes = 400_000
        taken = sum(store.append(*message(n, 4_000)) is not None for n in range(50))
    finally:
        store.close()
    after = held(queue_file)
    assert after["used"] <= before and taken == 0 and after["dropped"] == 50


WORKER = """
import sys, time
from pathlib import Path
from durable_analytics.store import MessageStore
path, start, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
store = MessageStore.open(path, max_queue_bytes=2_000_000, overflow="drop_newest")
owner = store.new_owner()
print("ready", flush=True)
while not start.exists():
    time.sleep(0.001)
moved = 0
while not stop.exists():
    lease = store.lease(owner, max_messages=5, max_bytes=10**9, lease_seconds=60)
    if lease is not None:
        moved += store.dead_letter(owner, lease.ids, http_status=400, reason="refused")
print(moved, flush=True)
"""


def test_the_byte_bound_holds_while_a_worker_moves_messages_to_dead_letters(
    queue_file: Path, tmp_path: Path, child_env: Dict[str, str]
) -> None:
    """Moving rows to the dead letters takes new pages and frees others: no appender in
    another process may fill the pages so freed past the bound."""
    limit = 2_000_000
    options = {"max_queue_bytes": limit, "overflow": "drop_newest"}
    MessageStore.open(queue_file, **options).close()
    stop = tmp_path / "stop"
    worker = subprocess.Popen(
        run_python(WORKER, str(queue_file), str(tmp_path / "start"), str(stop)),
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        run_appenders(queue_file, tmp_path, child_env, options, 20, MESSAGE_BYTES)
        stop.touch()
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    after = held(queue_file)
    assert after["used"] <= limit and int(out.split()[-1]) > 0
