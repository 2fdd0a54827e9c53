"""Bounds that hold: one request's total deadline, leases longer than any request, and the
time flush/shutdown/exit/settings changes take, against a server that trickles its answer.

The deadlines here are real (they are the feature) but small, and asserted with wide margins.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import FAST_RETRY
from trickle import TrickleServer

import durable_analytics as analytics
from durable_analytics import Client, ConfigError
from durable_analytics.deadline import LEASE_MARGIN
from durable_analytics.messages import Encoder, Track
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector
from durable_analytics.transport import Kind, Transport, request_deadline
from durable_analytics.worker import Worker

SLOW = 0.05  # seconds between bytes: a 200-byte answer takes about 10 s


def test_the_deadline_is_the_timeout_or_the_sum_of_a_pair() -> None:
    assert request_deadline(15.0) == 15.0
    assert request_deadline((3.0, 10.0)) == 13.0
    assert Transport("k", "http://127.0.0.1:9", timeout=(1, 2)).max_seconds() == 3.0


def test_a_trickled_answer_is_cut_at_the_request_deadline() -> None:
    with TrickleServer(byte_every=SLOW) as server:
        transport = Transport("k", server.url, timeout=0.3)
        started = time.monotonic()
        outcome = transport.send(['{"messageId":"m1"}'])
        elapsed = time.monotonic() - started
        transport.close()
    assert outcome.kind is Kind.TRANSIENT
    assert "deadline" in outcome.reason
    assert elapsed < 0.3 + 2.0  # each byte came within the read timeout: only a cut ends it


def test_a_trickled_answer_over_tls_is_cut_too(tmp_path: Path) -> None:
    """The default endpoint is https: the cut must reach through the TLS socket."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with TrickleServer(byte_every=SLOW, tls=context) as server:
        transport = Transport("k", server.url, timeout=0.5, verify=str(cert))
        started = time.monotonic()
        outcome = transport.send(['{"messageId":"m1"}'])
        elapsed = time.monotonic() - started
        transport.close()
    assert outcome.kind is Kind.TRANSIENT and "deadline" in outcome.reason
    assert elapsed < 0.5 + 2.0
    assert len(server.seen) == 1  # the request went through TLS, the answer trickled


def test_a_cut_in_the_middle_of_the_headers_is_no_answer() -> None:
    """The status line came, the headers did not end: http.client would make up a response
    from what it has, but a cut request never counts as accepted."""
    with TrickleServer(byte_every=SLOW) as server:
        transport = Transport("k", server.url, timeout=1.2)  # "HTTP/1.1 200 X" took 0.8 s
        assert transport.send(['{"messageId":"m1"}']).kind is Kind.TRANSIENT
        transport.close()


def test_a_kept_alive_connection_is_cut_too_and_the_next_request_reconnects() -> None:
    with TrickleServer(byte_every=0.0) as server:
        transport = Transport("k", server.url, timeout=0.3)
        assert transport.send(['{"messageId":"m1"}']).kind is Kind.ACCEPTED
        server.byte_every = SLOW  # the same connection, now trickling
        started = time.monotonic()
        assert transport.send(['{"messageId":"m2"}']).kind is Kind.TRANSIENT
        assert time.monotonic() - started < 0.3 + 2.0
        server.byte_every = 0.0
        assert transport.send(['{"messageId":"m3"}']).kind is Kind.ACCEPTED
        transport.close()
    assert [seen.ids for seen in server.seen] == [["m1"], ["m2"], ["m3"]]


def test_a_request_within_its_deadline_is_not_cut_later() -> None:
    with TrickleServer(byte_every=0.0) as server:
        transport = Transport("k", server.url, timeout=0.2)
        for index in range(3):
            assert transport.send([f'{{"messageId":"m{index}"}}']).kind is Kind.ACCEPTED
        time.sleep(0.3)  # past the first request's deadline: its cutoff must not fire now
        assert transport.send(['{"messageId":"late"}']).kind is Kind.ACCEPTED
        transport.close()
    assert len(server.seen) == 4


@pytest.mark.parametrize("timeout", [0.3, (0.1, 0.2)])
def test_a_silent_server_is_still_bounded(timeout: object) -> None:
    with TrickleServer(byte_every=10.0) as server:
        transport = Transport("k", server.url, timeout=timeout)  # type: ignore[arg-type]
        started = time.monotonic()
        assert transport.send(['{"messageId":"m1"}']).kind is Kind.TRANSIENT
        assert time.monotonic() - started < 0.3 + 2.0
        transport.close()


def _store(path: Path) -> MessageStore:
    store = MessageStore(path)
    encoder = Encoder()
    for index in range(5):
        encoded = encoder.encode(Track(user_id=f"u{index}", event="Bounded"))
        store.append(encoded.json, encoded.size)
    return store


def test_no_batch_is_held_by_two_live_takers(collector: Collector, tmp_path: Path) -> None:
    """A takes a batch to a trickling server; B, on the same file, must not get it while A's
    request is alive (the lease outlives A's request, which ends at its deadline)."""
    store = _store(tmp_path / "q.sqlite3")
    with TrickleServer(byte_every=SLOW) as server:
        slow = Transport("k", server.url, timeout=0.3)
        fast = Transport("k", collector.url, timeout=5.0)
        taker_a = Worker(store, slow, policy=FAST_RETRY, flush_at=1, lease_seconds=1.3)
        taker_b = Worker(store, fast, policy=FAST_RETRY, flush_at=1)
        a_done = []
        a = threading.Thread(
            target=lambda: (taker_a.cycle(force=True), a_done.append(time.monotonic()))
        )
        a.start()
        assert _until(lambda: server.seen)
        give_up = time.monotonic() + 5
        while len(collector.message_ids) < 5 and time.monotonic() < give_up:
            taker_b.cycle(force=True)
            time.sleep(0.01)
        a.join(15)
        slow.close()
        fast.close()
    got = [r.received_at for r in collector.requests if r.status == 200]
    assert len(collector.message_ids) == 5
    # B sent them only once A's request was over (a little slack for A's thread to log).
    assert min(got) > a_done[0] - 0.2


def _until(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_lease_shorter_than_a_request_is_refused(collector: Collector, queue_file: Path) -> None:
    with pytest.raises(ConfigError, match="lease_seconds=2 must be at least the request deadline"):
        Client("k", endpoint=collector.url, queue_path=queue_file, timeout=(1, 2), lease_seconds=2)
    client = Client("k", endpoint=collector.url, queue_path=queue_file, timeout=(1, 2), send=True)
    assert client.lease_seconds >= 3.0 + LEASE_MARGIN
    client.shutdown(timeout=0)


def test_shutdown_returns_within_its_bound_with_nothing_left_in_flight(
    tmp_path: Path,
) -> None:
    with TrickleServer(byte_every=SLOW) as server:
        client = Client(
            "k",
            endpoint=server.url,
            queue_path=tmp_path / "q.sqlite3",
            flush_at=1,
            timeout=0.3,
            retry_policy=FAST_RETRY,
            exit_timeout=0,
        )
        client.track("u1", "Bounded")
        assert _until(lambda: server.seen)
        worker = client._worker
        started = time.monotonic()
        client.shutdown(timeout=0.1)
        elapsed = time.monotonic() - started
        alive = worker._thread.is_alive()
    assert not alive  # the batch on the wire was settled, not abandoned
    assert elapsed < 0.1 + 0.3 + LEASE_MARGIN + 2.0
    stats = client.stats()
    assert (stats.ready, stats.leased) == (1, 0)


EXIT_CHILD = """
import sys, time
from durable_analytics import Client, RetryPolicy
clients = [
    Client("k", endpoint=sys.argv[1], queue_path=f"{sys.argv[2]}.{index}", flush_at=1,
           timeout=float(sys.argv[4]), exit_timeout=float(sys.argv[5]),
           retry_policy=RetryPolicy(initial=float(sys.argv[6]), maximum=float(sys.argv[6])))
    for index in range(int(sys.argv[3]))
]
for client in clients:
    client.track("u1", "Bounded")
while any(client.stats().leased == 0 for client in clients):
    time.sleep(0.01)
print("on the wire", flush=True)
"""


def _exit_with_batches_on_the_wire(
    tmp_path: Path, env: dict, clients: int, timeout: float, exit_timeout: float, backoff: float
) -> float:
    """Seconds a child takes to exit once each of its clients has a batch on the wire."""
    with TrickleServer(byte_every=SLOW) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", EXIT_CHILD, server.url, str(tmp_path / "q"), str(clients),
             str(timeout), str(exit_timeout), str(backoff)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "on the wire"
        started = time.monotonic()
        child.wait(60)
        return time.monotonic() - started


def test_exit_settles_the_batch_on_the_wire_within_its_bound(
    tmp_path: Path, child_env: dict
) -> None:
    elapsed = _exit_with_batches_on_the_wire(tmp_path, child_env, 1, 0.3, 0.2, 5.0)
    stats = MessageStore(tmp_path / "q.0").stats()
    assert (stats.ready, stats.leased) == (1, 0)  # released by the child, not left to expire
    assert "deadline" in (stats.last_error or "")
    assert elapsed < 0.2 + 0.3 + LEASE_MARGIN + 3.0


def test_exit_bound_does_not_grow_with_the_number_of_clients(
    tmp_path: Path, child_env: dict
) -> None:
    """Five clients retrying against a trickling server share one exit_timeout (one after
    the other, they took five)."""
    elapsed = _exit_with_batches_on_the_wire(tmp_path, child_env, 5, 0.3, 1.0, 0.05)
    for index in range(5):
        assert MessageStore(tmp_path / f"q.{index}").stats().leased == 0
    assert elapsed < 1.0 + 0.3 + LEASE_MARGIN + 1.5


def test_changing_a_setting_does_not_wait_for_the_request_in_flight(tmp_path: Path) -> None:
    saved = {name: getattr(analytics, name) for name in analytics.SETTINGS}
    try:
        with TrickleServer(byte_every=SLOW) as server:
            analytics.write_key = "k"
            analytics.host = server.url
            analytics.queue_path = str(tmp_path / "q.sqlite3")
            analytics.timeout = 1.5
            analytics.flush_at = 1
            analytics.track("u1", "Bounded")
            assert _until(lambda: server.seen)
            old = analytics.default_client
            assert old is not None
            started = time.monotonic()
            analytics.debug = False
            assert time.monotonic() - started < 1.0  # the request in flight is not waited for
            thread = old._worker._thread
            assert _until(lambda: not thread.is_alive(), 1.5 + LEASE_MARGIN + 5)
            stats = old.stats()
            assert (stats.ready, stats.leased) == (1, 0)  # settled in the background
    finally:
        analytics.shutdown(timeout=0)
        for name, value in saved.items():
            setattr(analytics, name, value)
