"""What ``flush()`` and exit wait for: the messages this client stored in this process, not
other clients' or processes' rows, and nothing at all in a forked child that recorded nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from durable_analytics import Client
from durable_analytics.store import MessageStore
from durable_analytics.stored_ids import StoredIds
from durable_analytics.testing import Collector


def test_flush_does_not_wait_for_rows_another_taker_holds(
    make_client: Callable[..., Client], queue_file: Path, collector: Collector
) -> None:
    other = make_client(flush_at=1000, flush_interval=60.0)
    other.track("someone-else", "Stuck")  # another client's row, held by a live taker below
    holder = MessageStore(queue_file)
    assert holder.lease(holder.new_owner(), max_messages=10, max_bytes=10**6, lease_seconds=600)
    client = make_client(flush_at=1000, flush_interval=60.0)
    client.track("me", "Mine")
    assert client.flush(timeout=3.0)
    assert [m["userId"] for m in collector.messages] == ["me"]
    assert not other.flush(timeout=0.2)  # the other client's message is still held


def test_flush_after_a_flush_waits_only_for_what_came_since(
    make_client: Callable[..., Client], collector: Collector
) -> None:
    client = make_client(flush_at=1000, flush_interval=60.0)
    client.track("me", "First")
    assert client.flush(timeout=3.0)
    assert client._stored.snapshot() == ()
    client.track("me", "Second")
    assert client.flush(timeout=3.0)
    assert len(collector.message_ids) == 2


def test_stored_ids_stay_few_when_appends_interleave() -> None:
    pending = {"first": 1}
    ids = StoredIds(lambda: pending["first"])
    for row_id in range(1, 2001, 2):  # every other id: another writer in between
        ids.add(row_id)
    runs = ids.snapshot()
    assert len(runs) <= 256
    assert runs[0][0] == 1 and runs[-1][1] == 1999
    pending["first"] = 1500
    for row_id in range(2001, 2600, 2):
        ids.add(row_id)
    assert min(low for low, _ in ids.snapshot()) >= 1499 - 1000  # settled runs forgotten
    ids.forget_through(2599)
    assert ids.snapshot() == ()


def test_stored_ids_reported_out_of_order_stay_valid_ranges() -> None:
    ids = StoredIds(lambda: 1)
    order = [2, 1, 4, 3] + [n for pair in zip(range(6, 1200, 2), range(5, 1200, 2)) for n in pair]
    for row_id in order:  # threads of one client, each adding its id after appending it
        ids.add(row_id)
    runs = ids.snapshot()
    assert len(runs) <= 256
    assert all(low <= high for low, high in runs)
    assert list(runs) == sorted(runs)
    covered = {n for low, high in runs for n in range(low, high + 1)}
    assert set(order) <= covered


FORK_PARENT = """
import json, os, sys, time
from durable_analytics import Client, RetryPolicy
client = Client("k", endpoint=sys.argv[1], queue_path=sys.argv[2], flush_at=1,
                exit_timeout=float(sys.argv[3]),
                retry_policy=RetryPolicy(initial=0.05, maximum=0.1))
client.track("parent", "Backlog")
while client.stats().last_error is None and client.stats().delivered == 0:
    time.sleep(0.01)
started = time.monotonic()
pid = os.fork()
if pid == 0:
    if sys.argv[4] == "record":
        client.track("child", "Mine")
    sys.exit(0)
os.waitpid(pid, 0)
print(json.dumps({"child_seconds": time.monotonic() - started}), flush=True)
os._exit(0)
"""


def _fork(collector: Collector, tmp_path: Path, env: dict, exit_timeout: float, what: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", FORK_PARENT, collector.url, str(tmp_path / "q.sqlite3"),
         str(exit_timeout), what],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_forked_child_that_recorded_nothing_exits_at_once(
    collector: Collector, tmp_path: Path, child_env: dict
) -> None:
    collector.set_default(500)  # the parent's backlog stays
    report = _fork(collector, tmp_path, child_env, 20.0, "nothing")
    assert report["child_seconds"] < 10.0  # not the 20 s exit_timeout, for the parent's row


def test_a_forked_child_delivers_what_it_recorded_at_exit(
    collector: Collector, tmp_path: Path, child_env: dict
) -> None:
    _fork(collector, tmp_path, child_env, 20.0, "record")
    assert "child" in {m["userId"] for m in collector.messages}
