"""MessageStore across real processes on one file: kill -9, dead and live lease owners, parallel
takers and appenders, and fork()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional

import pytest
from conftest import run_python

from durable_analytics.store import AckQueue, MessageStore

BIG = 10**9

# A child that leases a batch, prints its owner and ids, then holds the lease until told.
HOLDER = """
import json, sys
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1])
owner = store.new_owner()
lease = store.lease(owner, max_messages=int(sys.argv[2]), max_bytes=10**9, lease_seconds=3600)
print(json.dumps({"owner": owner, "ids": lease.ids}), flush=True)
if sys.stdin.readline().strip() == "ack":
    print(store.ack(lease.ids), flush=True)
"""


@pytest.fixture
def spawned() -> Iterator[List[subprocess.Popen]]:
    """Children started by a test; killed and reaped if the test ends early."""
    procs: List[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def spawn(spawned: List[subprocess.Popen], child_env: dict):
    def start(code: str, *args: str, stdin: Optional[int] = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            run_python(code, *args),
            env=child_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        spawned.append(proc)
        return proc

    return start


@pytest.fixture
def store(queue_file: Path) -> Iterator[MessageStore]:
    opened = MessageStore.open(queue_file)
    yield opened
    opened.close()


def fill(store: MessageStore, count: int) -> List[int]:
    return store.append_many(
        [(json.dumps({"n": n}), len(json.dumps({"n": n}))) for n in range(count)]
    )


def finish(proc: subprocess.Popen, timeout: float = 15) -> str:
    """Wait for a child, insist it succeeded, and return its stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert "locked" not in err.lower()
    return out


def read_line(stream: IO[str]) -> str:
    line = stream.readline()
    assert line, "the child exited before answering"
    return line


def holders(store: MessageStore) -> Dict[int, Optional[str]]:
    return dict(
        store._read(
            "SELECT m.id, l.owner FROM messages m JOIN leases l ON m.id BETWEEN l.lo AND l.hi"
        )
    )


# --------------------------------------------------------------------------------------------
# Crash safety


APPENDER = """
import sys
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1], durability=sys.argv[2])
n = 0
while True:
    print(store.append('{"n": %d}' % n), n, flush=True)
    n += 1
"""


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_every_returned_append_survives_kill_9(spawn, queue_file: Path, durability: str) -> None:
    MessageStore.open(queue_file).close()
    proc = spawn(APPENDER, str(queue_file), durability)
    printed = [read_line(proc.stdout) for _ in range(200)]
    proc.send_signal(signal.SIGKILL)  # while it is still appending
    printed += proc.stdout.readlines()
    assert proc.wait(timeout=10) == -signal.SIGKILL

    # The kill may cut the last line short: only a whole line was printed after its append.
    whole = [line for line in printed if line.endswith("\n")]
    returned = {int(row): int(n) for row, n in (line.split() for line in whole)}
    assert len(returned) >= 200
    reopened = MessageStore.open(queue_file)
    stored = dict(reopened._read("SELECT id, data FROM messages"))
    for row, n in returned.items():
        assert json.loads(stored[row]) == {"n": n}
    reopened.close()


# --------------------------------------------------------------------------------------------
# Lease owners: dead ones lose their lease at once, live ones never


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_lease_of_a_killed_process_is_taken_back_at_once(
    spawn, store: MessageStore, reap: bool
) -> None:
    ids = fill(store, 10)
    proc = spawn(HOLDER, str(store.file), "4", stdin=subprocess.PIPE)
    held = json.loads(read_line(proc.stdout))
    assert held["ids"] == ids[:4]
    taker = store.new_owner()
    assert store.lease(taker, max_messages=10, max_bytes=BIG, lease_seconds=60).ids == ids[4:]

    proc.send_signal(signal.SIGKILL)
    if reap:
        assert proc.wait(timeout=10) == -signal.SIGKILL
    else:
        # Not reaped: the pid still exists as a zombie, which must count as dead.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)

    # Its lease expires in an hour, yet the next lease gets the rows now.
    assert store.lease(taker, max_messages=10, max_bytes=BIG, lease_seconds=60).ids == ids[:4]
    assert set(holders(store).values()) == {taker}


def test_lease_of_a_live_process_is_never_reset(
    spawn, store: MessageStore, queue_file: Path
) -> None:
    ids = fill(store, 6)
    proc = spawn(HOLDER, str(queue_file), "3", stdin=subprocess.PIPE)
    held = json.loads(read_line(proc.stdout))

    # Everything that used to reset leases on open: new objects, resume, reclaim, leases.
    others = [MessageStore.open(queue_file) for _ in range(3)]
    for other in others:
        AckQueue(store=other).resume_unack_tasks()
        assert other.reclaim() == 0
    taken = others[0].lease(others[0].new_owner(), max_messages=10, max_bytes=BIG, lease_seconds=60)
    assert taken.ids == ids[3:]
    assert (
        others[1].lease(others[1].new_owner(), max_messages=10, max_bytes=BIG, lease_seconds=60)
        is None
    )
    assert {i: o for i, o in holders(store).items() if i in held["ids"]} == {
        i: held["owner"] for i in ids[:3]
    }

    proc.stdin.write("ack\n")
    proc.stdin.flush()
    assert finish(proc).splitlines()[-1] == "3"
    assert store.stats().delivered == 3
    assert sorted(holders(store)) == ids[3:]
    for other in others:
        other.close()


# --------------------------------------------------------------------------------------------
# Many processes on one file

TAKER = """
import json, os, random, sys, time
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1])
owner = store.new_owner()
rand = random.Random(sys.argv[2])
meeting = sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()
taken = []
while True:
    lease = store.lease(owner, max_messages=rand.randint(1, 40), max_bytes=10**9, lease_seconds=60)
    if lease is None:
        break
    if not taken:  # hold the first lease until all four hold one: they surely overlap
        open(os.path.join(meeting, sys.argv[2]), "w").close()
        deadline = time.monotonic() + 10
        while len(os.listdir(meeting)) < 4 and time.monotonic() < deadline:
            time.sleep(0.002)
    taken += lease.ids
    assert store.ack(lease.ids) == len(lease.ids), "a leased row was acked by someone else"
print(json.dumps(taken), flush=True)
"""


def test_four_takers_take_every_message_exactly_once(
    spawn, store: MessageStore, tmp_path: Path
) -> None:
    ids = fill(store, 3000)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    takers = [
        spawn(TAKER, str(store.file), str(n), str(meeting), stdin=subprocess.PIPE) for n in range(4)
    ]
    for proc in takers:
        assert read_line(proc.stdout).strip() == "ready"
    for proc in takers:  # start together
        proc.stdin.write("go\n")
        proc.stdin.flush()

    taken = [json.loads(finish(proc).splitlines()[-1]) for proc in takers]

    everything = [row for part in taken for row in part]
    assert len(everything) == len(set(everything)) == len(ids)
    assert sorted(everything) == ids
    assert all(taken) and len(os.listdir(meeting)) == 4  # all four held leases at once
    stats = store.stats()
    assert (stats.ready, stats.leased, stats.delivered) == (0, 0, 3000)


APPENDERS = """
import json, sys
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1])
print(json.dumps([store.append('{"from": %s, "n": %d}' % (sys.argv[2], n)) for n in range(400)]))
"""

DRAINER = """
import json, os, sys, time
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1])
owner = store.new_owner()
taken = []
while True:
    lease = store.lease(owner, max_messages=50, max_bytes=10**9, lease_seconds=60)
    if lease is None:
        if os.path.exists(sys.argv[2]):
            lease = store.lease(owner, max_messages=50, max_bytes=10**9, lease_seconds=60)
            if lease is None:
                break
        else:
            time.sleep(0.005)
            continue
    taken += lease.ids
    store.ack(lease.ids)
print(json.dumps(taken))
"""


def test_four_appenders_and_a_taker_lose_nothing(
    spawn, store: MessageStore, tmp_path: Path
) -> None:
    done = tmp_path / "appenders-done"
    drainer = spawn(DRAINER, str(store.file), str(done))
    appenders = [spawn(APPENDERS, str(store.file), str(n)) for n in range(4)]

    appended = [json.loads(finish(proc)) for proc in appenders]
    done.touch()
    taken = json.loads(finish(drainer))

    every_append = [row for part in appended for row in part]
    assert len(every_append) == len(set(every_append)) == 1600
    assert None not in every_append
    assert len(taken) == len(set(taken)) and sorted(taken) == sorted(every_append)
    stats = store.stats()
    assert (stats.ready, stats.leased, stats.delivered) == (0, 0, 1600)


STATS = """
import json, sys
from durable_analytics.store import MessageStore
print(json.dumps(MessageStore.open(sys.argv[1]).stats().as_dict()))
"""


def test_another_process_reads_the_same_stats(spawn, store: MessageStore) -> None:
    ids = store.append_many([('{"n": 1}', 8)] * 5, now=time.time() - 50)
    owner = store.new_owner()
    lease = store.lease(owner, max_messages=2, max_bytes=BIG, lease_seconds=60)
    store.dead_letter(owner, lease.ids[:1], http_status=400, reason="bad")
    store.ack(ids[4:])
    mine = store.stats().as_dict()

    theirs = json.loads(finish(spawn(STATS, str(store.file))))

    for key in (
        "path",
        "ready",
        "leased",
        "dead",
        "dropped",
        "delivered",
        "queued_bytes",
        "last_error",
    ):
        assert theirs[key] == mine[key], key
    assert (mine["ready"], mine["leased"], mine["dead"], mine["delivered"]) == (2, 1, 1, 1)
    assert abs(theirs["oldest_age_seconds"] - mine["oldest_age_seconds"]) < 5
    assert theirs["oldest_age_seconds"] >= 50


# --------------------------------------------------------------------------------------------
# fork()


def wait_child(pid: int, timeout: float = 15) -> int:
    """waitpid with a deadline, so a deadlocked child fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def run_in_fork(work: Callable[..., Any], *args: Any) -> Any:
    """Run ``work`` in a forked child; return what it sends back, or fail with its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            signal.alarm(10)
            result = {"ok": work(*args)}
            code = 0
        except BaseException as exc:  # reported to the parent, which fails the test
            result = {"error": repr(exc)}
        try:
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    exit_code = wait_child(pid)
    result = json.loads(payload or b"{}")
    assert exit_code == 0, result
    return result["ok"]


def test_forked_child_uses_its_own_connection(store: MessageStore) -> None:
    ids = fill(store, 3)
    mine = store.new_owner()
    assert store.lease(mine, max_messages=1, max_bytes=BIG, lease_seconds=60).ids == ids[:1]
    parent_conn = store._db()

    def child() -> dict:
        fresh = store._conn is None or store._conn is not parent_conn
        added = store.append_many([('{"from": "child"}', 17)] * 2)
        owner = store.new_owner()
        lease = store.lease(owner, max_messages=10, max_bytes=BIG, lease_seconds=3600)
        store.ack(lease.ids[:2])
        return {
            "fresh": fresh and store._db() is not parent_conn,
            "added": added,
            "leased": lease.ids,
        }

    # Another thread of the parent could be inside the store at the moment of fork: the child
    # must not inherit that held lock.
    with store.tran_lock:
        got = run_in_fork(child)

    assert got["fresh"]
    assert got["leased"] == ids[1:] + got["added"]
    # The parent's connection still works, and sees the child's rows; the child left two rows
    # leased when it exited, and they come back at once.
    assert store._db() is parent_conn
    stats = store.stats()
    assert (stats.leased, stats.delivered) == (3, 2)
    assert store.lease(mine, max_messages=10, max_bytes=BIG, lease_seconds=60).ids == got["added"]
    store.ack(ids[:1] + got["added"])
    assert store.stats().delivered == 5
    assert store.append("{}") is not None
