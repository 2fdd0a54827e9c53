"""Environment: a read-only directory, a full disk, a corrupt file and a queue at its limit.

Each gives the documented error (a ``QueueError`` whose message says what to do) or the
documented policy, and nothing stored before is lost: it is delivered afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
from reliability_helpers import child_environment, drain_library, helper_command, suite_seed

from durable_analytics import Client, QueueCorrupt, QueueError, QueueFull
from durable_analytics.testing import Collector

IDLE = {"flush_at": 1_000_000, "flush_interval": 3600.0}


def _record(client: Client, count: int, prefix: str) -> List[str]:
    return [
        client.track("u", "Env", {"n": n}, message_id=f"{prefix}-{n}").message_id
        for n in range(count)
    ]


# ------------------------------------------------------------------------------------------------
# Read-only directory (root ignores file modes, so a read-only bind mount is used instead)


def _read_only_mount_works(directory: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ro_mount(directory)],
        capture_output=True,
    )
    return probe.returncode == 0


def _ro_mount(directory: Path) -> str:
    quoted = shlex.quote(str(directory))
    return f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"


@pytest.mark.parametrize(
    "target, fragments",
    [
        ("events.sqlite3", ["cannot open the queue file", "Read-only file system", "queue_path="]),
        ("other.sqlite3", ["cannot open the queue file", "Read-only file system", "queue_path="]),
        ("sub/events.sqlite3", ["cannot create the queue directory", "Read-only file system"]),
    ],
)
def test_read_only_directory_gives_a_clear_error_and_keeps_the_queue(
    make_client, collector: Collector, queue_file: Path, target: str, fragments: List[str]
) -> None:
    """A child sees the queue's directory through a read-only bind mount (in a private mount
    namespace: nothing leaks to the machine). Root ignores chmod, so this is what really
    fails for root."""
    client = make_client(**IDLE)
    stored = _record(client, 12, "before")
    client.shutdown(timeout=0)
    directory = queue_file.parent
    if not _read_only_mount_works(directory):
        pytest.skip("cannot make a read-only bind mount here (needs unshare and mount)")
    attempt = shlex.join(
        helper_command("try-record", "--queue", directory / target, "--endpoint", collector.url)
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        + [f"{_ro_mount(directory)} && exec {attempt}"],
        env=child_environment(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert outcome["stored"] is None
    assert "QueueError" in outcome["mro"], outcome
    for fragment in fragments:
        assert fragment in outcome["message"], outcome
    # Writable again (outside the child's mount namespace): everything stored is delivered.
    assert drain_library(queue_file, collector.url)
    assert collector.message_ids == set(stored)


def test_read_only_directory_with_an_existing_file(
    make_client, collector: Collector, queue_file: Path
) -> None:
    """The file is writable but its directory is not (chattr +i stops root too): SQLite cannot
    create its -wal and -shm files beside it."""
    client = make_client(**IDLE)
    stored = _record(client, 8, "before")
    client.shutdown(timeout=0)
    client.store.close()
    for suffix in ("-wal", "-shm"):  # as after the last process on the file exited
        assert not Path(f"{queue_file}{suffix}").exists() or _checkpoint(queue_file)
    directory = queue_file.parent
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(directory)]).returncode
    ):
        pytest.skip("chattr +i is not available here")
    try:
        result = subprocess.run(
            helper_command("try-record", "--queue", queue_file, "--endpoint", collector.url),
            env=child_environment(),
            capture_output=True,
            timeout=60,
        )
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert outcome["stored"] is None and "QueueError" in outcome["mro"], outcome
    assert "unable to open database file" in outcome["message"]
    assert "its directory are writable" in outcome["message"]
    assert drain_library(queue_file, collector.url)
    assert collector.message_ids == set(stored)


def _checkpoint(queue_file: Path) -> bool:
    """Fold the WAL into the file and switch journaling off and on, removing -wal and -shm."""
    conn = sqlite3.connect(str(queue_file))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return True


# ------------------------------------------------------------------------------------------------
# Disk full (simulated with SQLite's own limit: PRAGMA max_page_count makes it raise SQLITE_FULL;
# the real thing, on a small tmpfs, is in test_store_full_disk.py)


def test_full_disk_refuses_the_new_message_and_keeps_the_old(
    make_client, collector: Collector
) -> None:
    # The store caps the file at max_queue_bytes with the same pragma: with no bound, it
    # leaves the connection's limit alone.
    client = make_client(**IDLE, max_queue_bytes=None)
    stored = _record(client, 20, "before")
    conn = client.store._db()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    error = None
    for n in range(5_000):
        message_id = f"filling-{n}"
        try:
            client.track("u", "Fill", {"n": n, "pad": "x" * 300}, message_id=message_id)
        except QueueError as exc:
            error = exc
            refused = message_id
            break
        stored.append(message_id)
    assert error is not None, "the page limit never filled the file"
    assert type(error) is QueueError
    for fragment in ("is full", "a new message is not stored", "already queued was lost"):
        assert fragment in str(error)
    assert client.stats().ready == len(stored)

    # Room again (as when the disk is freed): everything stored is delivered, the refused
    # message never appears, and new calls are stored again.
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert client.flush(timeout=20)
    assert collector.message_ids == set(stored)
    assert refused not in collector.message_ids
    assert client.track("u", "After", message_id="after-full").message_id == "after-full"
    assert client.flush(timeout=20)
    assert "after-full" in collector.message_ids


# ------------------------------------------------------------------------------------------------
# Corrupt file


def _corruptions(good: bytes, seed: int) -> Dict[str, bytes]:
    rng = random.Random(seed)
    pages = len(good) // 4096
    page = rng.randrange(1, pages)  # any page but the header's
    overwritten = bytearray(good)
    overwritten[page * 4096 : (page + 1) * 4096] = rng.randbytes(4096)
    header = bytearray(good)
    header[:16] = b"NOT A SQLITE DB!"
    return {
        "garbage": rng.randbytes(8192),
        "truncated": good[: len(good) // 2],
        f"page {page} of {pages} overwritten": bytes(overwritten),
        "header overwritten": bytes(header),
    }


def _open_and_use(path: Path, endpoint: str, stage: List[str]) -> None:
    """Damage is found when the file is opened, or when a call first reads the damaged page;
    ``stage`` says which."""
    stage.append("open")
    client = Client("k", endpoint=endpoint, queue_path=path, **IDLE)
    stage.append("use")
    try:
        client.track("u", "On a damaged file")
        client.stats()
    finally:
        with contextlib.suppress(QueueError):  # shutdown's flush reads the damaged file too
            client.shutdown(timeout=0)
        client.store.close()


def test_corrupt_file_is_reported_and_never_replaced(
    make_client, collector: Collector, queue_file: Path, tmp_path: Path
) -> None:
    seed = suite_seed()
    client = make_client(**IDLE)
    _record(client, 200, "doomed")
    client.store.checkpoint()
    client.shutdown(timeout=0)
    client.store.close()
    good = queue_file.read_bytes()
    for number, (name, damaged) in enumerate(_corruptions(good, seed).items()):
        path = tmp_path / f"case{number}" / "events.sqlite3"
        path.parent.mkdir()
        path.write_bytes(damaged)
        stage: List[str] = []
        with pytest.raises(QueueCorrupt) as info:
            _open_and_use(path, collector.url, stage)
        text = str(info.value)
        assert "is damaged or not a queue file" in text, (name, text)
        assert "Nothing was deleted" in text and f"mv '{path}'" in text, (name, text)
        if stage[-1] == "open":
            assert path.read_bytes() == damaged, f"seed={seed}: {name}: the file changed"
        else:  # a call may have appended before another read the damaged page
            assert path.stat().st_size >= len(damaged), f"seed={seed}: {name}: truncated"
        damaged = path.read_bytes()
        # The advice works: moved aside, a new queue starts and delivers.
        path.rename(path.with_name("events.sqlite3.broken"))
        fresh = Client("k", endpoint=collector.url, queue_path=path, flush_interval=0.05)
        try:
            message_id = fresh.track(
                "u", "After corruption", message_id=f"fresh-{number}"
            ).message_id
            assert fresh.flush(timeout=10)
            assert message_id in collector.message_ids
        finally:
            fresh.shutdown(timeout=0)
        assert path.with_name("events.sqlite3.broken").read_bytes() == damaged


def test_another_applications_sqlite_file_is_not_touched(
    collector: Collector, tmp_path: Path
) -> None:
    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(QueueCorrupt) as info:
        Client("k", endpoint=collector.url, queue_path=path, **IDLE)
    assert "not a durable-analytics queue" in str(info.value)
    assert "['users']" in str(info.value)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------------
# Queue at its size limit


def test_full_queue_with_raise_refuses_and_keeps_the_rest(
    make_client, collector: Collector
) -> None:
    client = make_client(max_queue_messages=10, overflow="raise", **IDLE)
    stored = _record(client, 10, "kept")
    with pytest.raises(QueueFull) as info:
        client.track("u", "One too many", message_id="refused")
    for fragment in ("is full", "was not stored", "durable-analytics drain", "overflow="):
        assert fragment in str(info.value)
    assert client.flush(timeout=10)
    assert collector.message_ids == set(stored)
    assert client.stats().dropped == 0
    assert (
        client.track("u", "Room again", message_id="room").message_id == "room"
    )  # delivered: space


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_full_queue_drops_are_counted_and_warned(
    make_client, collector: Collector, caplog: Any, policy: str
) -> None:
    client = make_client(max_queue_messages=10, overflow=policy, **IDLE)
    stored = _record(client, 10, "kept")
    with caplog.at_level(logging.WARNING, logger="durable_analytics"):
        success, message = client.track("u", "One too many", message_id="extra")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is full" in w and f"overflow={policy}" in w and "dropped 1" in w for w in warnings)
    assert client.stats().dropped == 1
    assert message["messageId"] == "extra"
    if policy == "drop_newest":
        assert success is False
        expected = set(stored)
    else:
        assert success is True
        expected = set(stored[1:]) | {"extra"}
    assert client.flush(timeout=10)
    assert collector.message_ids == expected
