"""A full disk, for real: a 4 MB tmpfs mounted in a private mount namespace (nothing leaks to
the machine), filled up by a file beside the queue.

Every way in says the disk is full and what to do, never "check that the path exists":
``track()`` on a running client, ``Client()`` and ``MessageStore`` in a new process (SQLite
then cannot even grow its ``-shm`` file and says "disk I/O error"), ``drain`` and ``stats``.
Nothing stored is lost, and appends resume once space is freed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from durable_analytics.testing import Collector

# Runs inside the namespace, on the tmpfs at argv[1]; prints one JSON line of what it saw.
SCENARIO = r"""
import json, os, subprocess, sys
from pathlib import Path
import durable_analytics
from durable_analytics.errors import QueueError
from durable_analytics.store import MessageStore

root, endpoint = Path(sys.argv[1]), sys.argv[2]
queue = root / "q" / "events.sqlite3"
seen = {}

def error_of(call):
    try:
        call()
    except QueueError as exc:
        return str(exc)
    return None

def child(*argv):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    return {"code": done.returncode, "out": done.stdout, "err": done.stderr}

def open_client():
    return durable_analytics.Client("k", endpoint=endpoint, queue_path=queue,
                                    flush_interval=3600, flush_at=10**6)

def close(client):
    client.shutdown(timeout=0)
    client.store.close()  # this process lets go of the file, as if it had exited

first = open_client()
stored = [first.track("u", "Stored", {"n": n}).message_id for n in range(50)]
close(first)  # the last connection: the WAL is checkpointed, -wal and -shm are removed
running = open_client()
filler = root / "filler"

def fill_disk():  # take every byte left, appending to one file as another program would
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for chunk in (65536, 4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
    os.close(fd)

fill_disk()
big = {"pad": "x" * 20000}
seen["track"] = error_of(lambda: [running.track("u", "Big", big) for _ in range(200)])
close(running)
fill_disk()  # what closing gave back too: a new process must create -shm on a full disk
code = ("import durable_analytics, sys; "
        "durable_analytics.Client('k', endpoint=sys.argv[2], queue_path=sys.argv[1])")
seen["client"] = child("-c", code, str(queue), endpoint)
seen["store"] = child("-c", "import sys; from durable_analytics.store import MessageStore; "
                      "MessageStore.open(sys.argv[1]).stats()", str(queue))
seen["stats"] = child("-m", "durable_analytics", "stats", "--queue", str(queue))
seen["drain"] = child("-m", "durable_analytics", "drain", "--queue", str(queue),
                      "--write-key", "k", "--endpoint", endpoint)
filler.unlink()  # space is back
store = MessageStore.open(queue)
seen["resumed"] = store.append('{"type":"track","event":"After"}') is not None
seen["ready"] = store.stats().ready
store.close()
seen["stored"] = stored
print(json.dumps(seen))
"""


def _tmpfs_works(directory: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _mount(directory)],
        capture_output=True,
    )
    return probe.returncode == 0


def _mount(directory: Path) -> str:
    return f"mount -t tmpfs -o size=4m,mode=0700 tmpfs {shlex.quote(str(directory))}"


@pytest.fixture
def full_disk_run(tmp_path: Path, collector: Collector, child_env: Dict[str, str]) -> Dict:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if not _tmpfs_works(mount_point):
        pytest.skip("cannot mount a tmpfs here (needs unshare, mount and root)")
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(child_env, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    run = shlex.join([sys.executable, str(script), str(mount_point), collector.url])
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        + [f"{_mount(mount_point)} && exec {run}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


FULL = "disk holding"
NOT_A_PATH_PROBLEM = "check that the path exists"


def test_a_full_disk_says_so_everywhere_and_loses_nothing(full_disk_run: Dict) -> None:
    seen = full_disk_run
    assert seen["track"] is not None and FULL in seen["track"], seen["track"]
    assert "not stored" in seen["track"] and "free space" in seen["track"].lower()
    for way in ("client", "store", "stats", "drain"):
        outcome = seen[way]
        assert outcome["code"] != 0, (way, outcome)
        text = outcome["err"] + outcome["out"]
        assert FULL in text and "free space" in text.lower(), (way, text)
        assert NOT_A_PATH_PROBLEM not in text, (way, text)
    assert seen["resumed"] is True
    assert seen["ready"] == len(seen["stored"]) + 1  # the 50 stored, and the one after
