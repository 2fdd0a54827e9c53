"""Celery with a real prefork worker (not eager mode) on a filesystem broker: messages from a
task stopped by its time limit, from one whose process is killed outright, and from pool
processes at warm shutdown all arrive, each carrying its task's name and id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

pytest.importorskip("celery")

from durable_analytics.store import MessageStore  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402

HERE = Path(__file__).resolve().parent


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


WORKER = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "celery_tasks",
    "worker",
    "--pool=prefork",
    "--concurrency=2",
    "--without-heartbeat",
    "--without-mingle",
    "--without-gossip",
    "--loglevel=INFO",
]


@pytest.fixture
def worker_env(tmp_path: Path, collector: Collector, child_env: dict) -> dict:
    """The settings tests/celery_tasks.py reads, for the worker."""
    broker = tmp_path / "broker"
    broker.mkdir()
    settings = dict(
        DA_TEST_BROKER_DIR=str(broker),
        DA_TEST_ENDPOINT=collector.url,
        DA_TEST_QUEUE=str(tmp_path / "queue.sqlite3"),
    )
    env = dict(child_env, **settings)
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{env['PYTHONPATH']}"
    return env


@pytest.fixture
def worker(worker_env: dict, tmp_path: Path) -> Iterator[Tuple[subprocess.Popen, Path]]:
    """A real ``celery worker --pool=prefork`` in its own process group, killed at the end
    (its own pool teardown takes seconds more than the test needs and holds nothing of ours)."""
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            WORKER,
            env=worker_env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process, log_path
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_prefork_worker_loses_nothing(
    worker: Tuple[subprocess.Popen, Path], worker_env: dict, collector: Collector
) -> None:
    from celery import Celery

    # This process only sends: tasks by name, on the same broker, without the app's module
    # (importing it would configure this process's module-level analytics settings).
    sender = Celery("sender", broker="filesystem://")
    sender.conf.broker_transport_options = {
        "data_folder_in": worker_env["DA_TEST_BROKER_DIR"],
        "data_folder_out": worker_env["DA_TEST_BROKER_DIR"],
        "control_folder": str(Path(worker_env["DA_TEST_BROKER_DIR"]) / "control"),
    }

    process, log_path = worker
    queue = Path(worker_env["DA_TEST_QUEUE"])

    def stored() -> int:
        if not queue.exists():
            return 0
        store = MessageStore(queue)
        try:
            stats = store.stats()
            return stats.ready + stats.leased
        finally:
            store.close()

    def log_says(text: str) -> bool:
        return text in log_path.read_text()

    sender.send_task("stuck", args=[0])
    assert wait_until(lambda: log_says("SoftTimeLimitExceeded"), 30), log_path.read_text()
    sender.send_task("killed", args=[1])
    assert wait_until(lambda: log_says("signal 9 (SIGKILL)"), 30), log_path.read_text()
    for n in range(2, 8):
        sender.send_task("record", args=[n])
    # Nothing was sent yet: everything waits on disk, the two dead tasks' messages too.
    assert wait_until(lambda: stored() == 8, 30), (stored(), collector.messages)
    assert collector.messages == []
    # Warm shutdown: each pool process gives its client the bounded exit shutdown.
    process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: stored() == 0, 30), log_path.read_text()

    assert len(collector.messages) == 8
    events = sorted((m["properties"]["n"], m["event"]) for m in collector.messages)
    assert events == [(0, "Task Stuck"), (1, "Task Killed")] + [
        (n, "Task Ran") for n in range(2, 8)
    ]
    names = {"Task Stuck": "stuck", "Task Killed": "killed", "Task Ran": "record"}
    for message in collector.messages:
        assert message["context"]["celery"]["task"] == names[message["event"]]
    assert len({m["context"]["celery"]["taskId"] for m in collector.messages}) == 8
