"""Celery with a real prefork worker (not eager mode) on a filesystem broker: messages from a
task stopped by its hard time limit, from one whose process is killed outright, and from pool
processes at warm shutdown all arrive, each carrying its task's name and id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

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


@pytest.fixture
def worker_env(tmp_path: Path, collector: Collector, child_env: dict) -> Iterator[dict]:
    broker = tmp_path / "broker"
    broker.mkdir()
    env = dict(child_env)
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{env['PYTHONPATH']}"
    env.update(
        DA_TEST_BROKER_DIR=str(broker),
        DA_TEST_ENDPOINT=collector.url,
        DA_TEST_QUEUE=str(tmp_path / "queue.sqlite3"),
    )
    yield env


def test_prefork_worker_loses_nothing(
    worker_env: dict, collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DA_TEST_BROKER_DIR", "DA_TEST_ENDPOINT", "DA_TEST_QUEUE"):
        monkeypatch.setenv(name, worker_env[name])
    monkeypatch.syspath_prepend(str(HERE))
    import celery_tasks

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork",
         "--concurrency=2", "--without-heartbeat", "--without-mingle", "--without-gossip",
         "--loglevel=INFO"],
        env=worker_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    queue = Path(worker_env["DA_TEST_QUEUE"])

    def stored() -> int:
        if not queue.exists():
            return 0
        store = MessageStore(queue)
        try:
            return store.stats().ready + store.stats().leased
        finally:
            store.close()

    def log_says(text: str) -> bool:
        return text in (tmp_path / "worker.log").read_text()

    try:
        celery_tasks.stuck.delay(0)
        assert wait_until(lambda: log_says("Hard time limit"), 30)
        celery_tasks.killed.delay(1)
        assert wait_until(lambda: log_says("signal 9 (SIGKILL)"), 30)
        for n in range(2, 8):
            celery_tasks.record.delay(n)
        # The process stopped by its time limit sent its message as it exited; the others
        # wait on disk, the killed task's too.
        assert wait_until(lambda: stored() == 7, 30), (stored(), collector.messages)
        assert [m["event"] for m in collector.messages] == ["Task Stuck"]
        # Warm shutdown: each pool process gives its client the bounded exit shutdown.
        worker.send_signal(signal.SIGTERM)
        assert wait_until(lambda: stored() == 0, 30), (tmp_path / "worker.log").read_text()
    finally:
        # The main process's own pool teardown takes seconds more and holds nothing of ours.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        log.close()
    assert len(collector.messages) == 8
    events = sorted((m["properties"]["n"], m["event"]) for m in collector.messages)
    assert events == [(0, "Task Stuck"), (1, "Task Killed")] + [
        (n, "Task Ran") for n in range(2, 8)
    ]
    names = {"Task Stuck": "stuck", "Task Killed": "killed", "Task Ran": "record"}
    for message in collector.messages:
        assert message["context"]["celery"]["task"] == names[message["event"]]
    assert len({m["context"]["celery"]["taskId"] for m in collector.messages}) == 8
