"""SIGTERM, really sent to a real process mid-upload: with the opt-in handler the batch on the
wire is settled (the next process sends nothing again), the previous handler runs after, and
without opting in the library leaves signal handling alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from durable_analytics import Client, ConfigError
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Response

CHILD = """
import signal, sys, time
import durable_analytics as analytics
from durable_analytics import Client
url, queue, mode = sys.argv[1:4]
if mode == "app-handler":
    def mine(signum, frame):
        print("app handler ran", flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, mine)
if mode == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
options = dict(endpoint=url, queue_path=queue, flush_at=1, timeout=10, exit_timeout=5)
if mode == "client-option":
    options["handle_sigterm"] = True
else:
    getattr(analytics, "install_signal_handlers", lambda: None)()
client = Client("k", **options)
client.track("u1", "Stopping")
print("ready", flush=True)
for _ in range(600):
    time.sleep(0.1)
print("still running", flush=True)
"""


def _term_mid_upload(
    collector: Collector, queue: Path, env: dict, mode: str
) -> Tuple[int, List[str]]:
    """Start the child, SIGTERM it while the collector holds its first request's answer."""
    collector.respond_with(Response(delay=1.0))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, collector.url, str(queue), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert collector.wait_for_requests(1, timeout=10)
    child.send_signal(signal.SIGTERM)
    if mode == "ignored":  # the process goes on, delivering as usual: stop it afterwards
        delivered = _until_delivered(queue)
        alive = child.poll() is None
        child.kill()
        child.communicate(timeout=30)
        assert delivered and alive
        return 0, []
    out, err = child.communicate(timeout=30)
    return child.returncode, out.splitlines()


def _until_delivered(queue: Path, seconds: float = 10.0) -> bool:
    store = MessageStore(queue)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store.stats().delivered:
            return True
        time.sleep(0.02)
    return False


def _next_process_sends(collector: Collector, queue: Path, env: dict) -> int:
    """Requests a drain of the same file makes afterwards (a batch left leased is re-sent)."""
    before = len(collector.requests)
    subprocess.run(
        [sys.executable, "-m", "durable_analytics", "drain", "--queue", str(queue),
         "--endpoint", collector.url, "--write-key", "k", "--timeout", "20"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    return len(collector.requests) - before


def test_sigterm_settles_the_batch_on_the_wire_then_dies_of_sigterm(
    collector: Collector, tmp_path: Path, child_env: dict
) -> None:
    queue = tmp_path / "q.sqlite3"
    code, _ = _term_mid_upload(collector, queue, child_env, "default")
    assert code == -signal.SIGTERM  # the default action ran after the shutdown
    stats = MessageStore(queue).stats()
    assert (stats.ready, stats.leased, stats.delivered) == (0, 0, 1)
    assert _next_process_sends(collector, queue, child_env) == 0
    assert collector.duplicates == 0


def test_the_applications_own_handler_runs_after_the_shutdown(
    collector: Collector, tmp_path: Path, child_env: dict
) -> None:
    queue = tmp_path / "q.sqlite3"
    code, lines = _term_mid_upload(collector, queue, child_env, "app-handler")
    assert (code, lines[-1]) == (7, "app handler ran")
    assert MessageStore(queue).stats().delivered == 1


@pytest.mark.parametrize("mode", ["client-option", "ignored"])
def test_the_client_option_and_an_ignored_signal(
    collector: Collector, tmp_path: Path, child_env: dict, mode: str
) -> None:
    queue = tmp_path / "q.sqlite3"
    code, lines = _term_mid_upload(collector, queue, child_env, mode)
    if mode == "client-option":
        assert code == -signal.SIGTERM
    assert MessageStore(queue).stats().delivered == 1
    assert "still running" not in lines


def test_by_default_no_handler_is_installed(make_client) -> None:  # type: ignore[no-untyped-def]
    before = signal.getsignal(signal.SIGTERM)
    make_client().track("u1", "Nothing installed")
    assert signal.getsignal(signal.SIGTERM) is before


def test_handlers_are_installed_from_the_main_thread_only(make_client) -> None:  # type: ignore[no-untyped-def]
    errors: List[Exception] = []

    def build() -> None:
        try:
            make_client(handle_sigterm=True)
        except ConfigError as exc:
            errors.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    thread.join(10)
    assert errors and "main thread" in str(errors[0])
    assert isinstance(Client, type)
