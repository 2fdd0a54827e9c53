"""Delivery against the real loopback collector: every response class of the wire contract,
batching triggers, flush and shutdown bounds, callbacks, and the worker's resilience."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from durable_analytics import RejectedError, RetryPolicy, TransientError
from durable_analytics.policy import BREAKER_AFTER
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Response
from durable_analytics.transport import Transport, envelope_overhead

SLOW_RETRY = RetryPolicy(initial=30.0, maximum=60.0, jitter=False)


def track_many(client: Any, count: int, prefix: str = "e", **extra: Any) -> List[str]:
    return [
        client.track(f"user-{i}", f"{prefix}{i}", {"i": i, **extra}).message_id
        for i in range(count)
    ]


# ------------------------------------------------------------------------------------------------
# The request on the wire


def test_batch_request_follows_the_wire_contract(make_client, collector: Collector) -> None:
    client = make_client(write_key="secret-key", flush_at=100)
    ids = track_many(client, 7)
    assert client.flush() is True

    assert collector.message_ids == set(ids)
    request = collector.requests[0]
    assert request.path == "/v1/batch"
    assert request.write_key == "secret-key"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"secret-key:").decode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("durable-analytics/")
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.gzip and request.wire_bytes < request.body_bytes
    sent_at = datetime.fromisoformat(request.payload["sentAt"])
    assert sent_at.utcoffset() is not None
    assert [m["messageId"] for m in request.payload["batch"]] == ids
    assert request.payload["batch"][0]["properties"] == {"i": 0}


def test_gzip_can_be_turned_off(make_client, collector: Collector) -> None:
    client = make_client(gzip=False)
    track_many(client, 3)
    assert client.flush()
    request = collector.requests[0]
    assert not request.gzip
    assert "Content-Encoding" not in request.headers
    assert request.wire_bytes == request.body_bytes


def test_sent_at_is_stamped_at_each_attempt(make_client, collector: Collector) -> None:
    collector.respond_with(Response(503))
    client = make_client()
    client.track("u", "e")
    assert client.flush()
    first, second = collector.requests
    assert first.payload["batch"] == second.payload["batch"]
    assert first.payload["sentAt"] <= second.payload["sentAt"]
    assert [r.status for r in collector.requests] == [503, 200]


def test_body_envelope_overhead_matches_real_body() -> None:
    transport = Transport("k", "http://127.0.0.1:9")
    body = transport.body([])
    assert len(body) == envelope_overhead()
    assert json.loads(transport.body(['{"a":1}', '{"b":2}'], sent_at="x")) == {
        "batch": [{"a": 1}, {"b": 2}],
        "sentAt": "x",
    }


# ------------------------------------------------------------------------------------------------
# When the worker uploads


def test_upload_starts_once_flush_at_messages_wait(make_client, collector: Collector) -> None:
    client = make_client(flush_at=5, flush_interval=60.0)
    ids = track_many(client, 5)
    assert collector.wait_for(5, timeout=10)
    assert collector.message_ids == set(ids)


def test_fewer_than_flush_at_wait_for_flush_interval(make_client, collector: Collector) -> None:
    client = make_client(flush_at=50, flush_interval=60.0)
    track_many(client, 3)
    time.sleep(0.3)
    assert collector.requests == []
    assert client.flush()
    assert len(collector.message_ids) == 3


def test_flush_interval_sends_a_partial_batch(make_client, collector: Collector) -> None:
    client = make_client(flush_at=50, flush_interval=0.2)
    ids = track_many(client, 3)
    assert collector.wait_for(3, timeout=10)
    assert collector.message_ids == set(ids)
    assert len(collector.requests) == 1


def test_flush_at_1_sends_every_message(make_client, collector: Collector) -> None:
    client = make_client(flush_at=1, flush_interval=60.0)
    message_id = client.track("u", "Dev Event").message_id
    assert collector.wait_for(1, timeout=10)
    assert collector.message_ids == {message_id}


def test_worker_notices_messages_appended_by_another_process(
    make_client, collector: Collector, queue_file
) -> None:
    client = make_client(flush_at=1, flush_interval=0.05)
    other = MessageStore(queue_file)
    payload = {"type": "track", "event": "x", "userId": "u", "messageId": "from-elsewhere"}
    other.append(json.dumps(payload))
    assert collector.wait_for(1, timeout=10)
    assert collector.message_ids == {"from-elsewhere"}
    assert client.stats().ready == 0


def test_leftovers_of_an_earlier_process_are_delivered_without_any_call(
    make_client, collector: Collector, queue_file
) -> None:
    earlier = MessageStore(queue_file)
    for i in range(30):
        earlier.append(json.dumps({"type": "track", "messageId": f"old-{i}", "userId": "u"}))
    earlier.close()
    make_client(flush_at=20, flush_interval=0.05)
    assert collector.wait_for(30, timeout=10)
    assert collector.message_ids == {f"old-{i}" for i in range(30)}


def test_batches_stay_under_500kb_in_a_flood_of_30kb_messages(
    make_client, collector: Collector
) -> None:
    client = make_client(flush_at=100, max_batch_messages=500)
    ids = track_many(client, 40, blob="x" * 30_000)
    assert client.flush(timeout=20)
    assert collector.message_ids == set(ids)
    assert all(r.status == 200 for r in collector.requests)
    assert max(r.body_bytes for r in collector.requests) <= 500_000
    assert len(collector.requests) >= 3  # 40 x 30 KB cannot fit fewer requests


# ------------------------------------------------------------------------------------------------
# Each response class


def test_transient_statuses_are_retried_until_accepted(make_client, collector: Collector) -> None:
    collector.respond_with(503, 500, 408, Response(502))
    client = make_client()
    ids = track_many(client, 4)
    assert client.flush()
    assert collector.message_ids == set(ids)
    assert [r.status for r in collector.requests] == [503, 500, 408, 502, 200]
    stats = client.stats()
    assert (stats.ready, stats.dead, stats.delivered) == (0, 0, 4)
    assert stats.retry_at is None  # success clears the shared backoff


def test_dropped_connections_and_read_timeouts_are_retried(
    make_client, collector: Collector
) -> None:
    collector.respond_with(Response(drop=True), Response(503, delay=1.0))
    client = make_client(timeout=(1.0, 0.3))
    ids = track_many(client, 3)
    assert client.flush()
    assert collector.message_ids == set(ids)
    assert collector.duplicates == 0
    assert client.store.stats().delivered == 3


def test_retry_after_is_obeyed_and_capped(make_client, collector: Collector) -> None:
    collector.respond_with(Response(429, retry_after="1"))
    policy = RetryPolicy(initial=0.01, maximum=0.05, retry_after_max=0.4)
    client = make_client(retry_policy=policy)
    client.track("u", "e")
    assert client.flush()
    first, second = collector.requests
    gap = second.received_at - first.received_at
    assert 0.35 <= gap < 1.0  # waited the capped Retry-After, not the 1 s asked nor the 0.05 cap


def test_poisoned_batch_is_bisected_and_only_the_poison_dead_lettered(
    make_client, collector: Collector
) -> None:
    errors: List[Tuple[Exception, List[Dict[str, Any]]]] = []
    collector.reject_marker = "POISON"
    client = make_client(flush_at=100, on_error=lambda e, batch: errors.append((e, batch)))
    good = track_many(client, 10)
    bad = [
        client.track("u", "POISON-1").message_id,
        client.track("u", "ok", {"note": "POISON"}).message_id,
    ]
    good += track_many(client, 5, prefix="late")
    assert client.flush()

    assert collector.message_ids == set(good)
    dead = client.store.dead_letters()
    assert [json.loads(d.data)["messageId"] for d in dead] == bad
    assert {d.http_status for d in dead} == {400}
    assert all("400" in d.reason for d in dead)
    rejected = [(e, batch) for e, batch in errors if isinstance(e, RejectedError)]
    assert sorted(m["messageId"] for _, batch in rejected for m in batch) == sorted(bad)
    assert all(e.status == 400 for e, _ in rejected)
    assert client.stats().ready == 0


def test_413_splits_and_dead_letters_a_message_too_big_for_the_server(
    make_client, collector: Collector
) -> None:
    collector.max_body_bytes = 4_000
    client = make_client(flush_at=100)
    small = track_many(client, 12)
    huge = client.track("u", "huge", {"blob": "y" * 5_000}).message_id
    assert client.flush()
    assert collector.message_ids == set(small)
    assert max(r.body_bytes for r in collector.requests if r.status == 200) <= 4_000
    (dead,) = client.store.dead_letters()
    assert json.loads(dead.data)["messageId"] == huge
    assert dead.http_status == 413


def test_other_4xx_dead_letters_the_batch_with_status_and_reason(
    make_client, collector: Collector
) -> None:
    collector.respond_with(Response(422, body='{"error": "unprocessable"}'))
    client = make_client(flush_at=100)
    ids = track_many(client, 3)
    assert client.flush()
    dead = client.store.dead_letters()
    assert [json.loads(d.data)["messageId"] for d in dead] == ids
    assert all(d.http_status == 422 and "unprocessable" in d.reason for d in dead)
    assert len(collector.requests) == 1


def test_bad_write_key_keeps_messages_pauses_and_reports(queue_file) -> None:
    errors: List[Exception] = []
    with Collector(write_key="right-key") as server:
        from durable_analytics import Client

        client = Client(
            "wrong-key",
            endpoint=server.url,
            queue_path=queue_file,
            flush_interval=0.05,
            on_error=lambda e, batch: errors.append(e),
            exit_timeout=0,
        )
        try:
            ids = track_many(client, 3)
            started = time.monotonic()
            assert client.flush(timeout=5) is False
            assert time.monotonic() - started < 2.5  # the pause outlasts the timeout: no waiting
            assert server.message_ids == set()
            assert [r.status for r in server.requests] == [401]
            stats = client.stats()
            assert (stats.ready, stats.dead) == (3, 0)
            assert stats.retry_at is None  # the pause is this process's: a fixed key need not wait
            assert errors == []  # kept, not given up: on_error hears only of dead letters
        finally:
            client.shutdown(timeout=0)
        fixed = Client(
            "right-key",
            endpoint=server.url,
            queue_path=queue_file,
            flush_interval=0.05,
            exit_timeout=0,
        )
        try:
            assert server.wait_for(3, timeout=10)
            assert server.message_ids == set(ids)
        finally:
            fixed.shutdown(timeout=0)


def test_messages_failing_past_max_retry_age_are_dead_lettered_not_dropped(
    make_client, collector: Collector
) -> None:
    collector.set_default(503)
    errors: List[Exception] = []
    policy = RetryPolicy(initial=0.01, maximum=0.02, max_retry_age=0.3)
    client = make_client(retry_policy=policy, on_error=lambda e, b: errors.append(e))
    ids = track_many(client, 2)
    assert client.flush(timeout=10) is True  # dead-lettered counts as settled
    dead = client.store.dead_letters()
    assert [json.loads(d.data)["messageId"] for d in dead] == ids
    assert all("gave up retrying" in d.reason and "503" in d.reason for d in dead)
    # on_error runs in the upload's thread right after the store settles the rows, so it may
    # still be running when flush() sees them settled (docs/api.md, on_error).
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(isinstance(e, RejectedError) for e in errors)


def test_on_error_is_not_told_of_a_message_still_retried_after_max_retries(
    make_client, collector: Collector, caplog: Any
) -> None:
    """segment's on_error means 'given up'; a message retried after max_retries is not, and a
    handler that saves lost messages must not save it (it is delivered later)."""
    collector.respond_with(503, 503, 503)
    errors: List[Tuple[Exception, List[Dict[str, Any]]]] = []
    client = make_client(max_retries=2, on_error=lambda e, b: errors.append((e, b)))
    with caplog.at_level(logging.WARNING, logger="durable_analytics"):
        message_id = client.track("u", "e").message_id
        assert client.flush()
    assert errors == []
    assert any("not delivered after 2 attempts" in r.getMessage() for r in caplog.records)
    assert collector.message_ids == {message_id}


# ------------------------------------------------------------------------------------------------
# Backoff state lives in the file


def test_a_failed_batch_waits_alone_and_its_wait_survives_a_restart(
    make_client, collector: Collector, queue_file
) -> None:
    collector.respond_with(503)
    first = make_client(retry_policy=RetryPolicy(initial=2.0, maximum=2.0, jitter=False))
    first.track("u", "e")
    assert first.flush(timeout=0.5) is False
    first.shutdown(timeout=0)
    assert len(collector.requests) == 1
    assert first.stats().retrying == 1

    second = make_client(retry_policy=RetryPolicy(initial=2.0, maximum=2.0, jitter=False))
    second.track("u", "e2")
    assert second.flush(timeout=5) is True  # other messages keep flowing
    assert len(collector.requests) == 2  # the restart did not send the waiting batch early
    assert collector.message_ids == {collector.requests[1].payload["batch"][0]["messageId"]}
    stats = second.stats()
    assert (stats.retrying, stats.breaker) == (1, "closed")  # one failure: no file-wide wait
    assert collector.wait_for(2, timeout=10)  # and then it is sent
    assert collector.requests[2].received_at - collector.requests[0].received_at >= 1.9


def _count_cycles(worker: Any) -> List[int]:
    """Record each pass of the worker's loop (each one reads the queue file)."""
    cycles: List[int] = []
    original = worker.cycle

    def counted(force: bool = False) -> Any:
        cycles.append(1)
        return original(force)

    worker.cycle = counted
    return cycles


def test_appends_during_a_backoff_do_not_wake_the_worker(make_client, collector: Collector) -> None:
    collector.set_default(503)
    client = make_client(flush_at=1, retry_policy=SLOW_RETRY, max_in_flight=1)
    for n in range(1, BREAKER_AFTER + 1):  # each fails and waits alone; the last opens the breaker
        client.track("u", f"failing-{n}")
        assert collector.wait_for_requests(n, timeout=10)
    deadline = time.monotonic() + 10
    while client.stats().breaker != "open" and time.monotonic() < deadline:
        time.sleep(0.02)  # the last answer is being settled
    assert client.stats().breaker == "open"
    cycles = _count_cycles(client._worker)

    track_many(client, 500)
    time.sleep(0.3)

    assert len(cycles) <= 2, len(cycles)  # it sleeps out the backoff instead of polling
    assert len(collector.requests) == BREAKER_AFTER
    assert client.stats().ready == 500 + BREAKER_AFTER


def test_appends_while_a_batch_lingers_do_not_wake_the_worker_each_time(
    make_client, collector: Collector
) -> None:
    client = make_client(flush_at=1)
    client.track("u", "first")
    assert client.flush(timeout=10)
    cycles = _count_cycles(client._worker)

    track_many(client, 3000)
    assert client.flush(timeout=30)

    requests_sent = len(collector.requests) - 1
    assert len(collector.message_ids) == 3001
    # One pass per request, plus a few that find the batch lingering: not one per call.
    assert len(cycles) <= 3 * requests_sent + 20, (len(cycles), requests_sent)


def test_shutdown_interrupts_a_long_backoff_at_once(make_client, collector: Collector) -> None:
    collector.set_default(503)
    client = make_client(retry_policy=SLOW_RETRY)
    client.track("u", "e")
    assert collector.wait_for_requests(1, timeout=10)
    started = time.monotonic()
    assert client.shutdown(timeout=0.2) is False
    assert time.monotonic() - started < 2.0
    worker = client._worker
    assert worker is not None and not worker._thread.is_alive()
    assert client.store.stats().ready == 1  # kept on disk for the next run


# ------------------------------------------------------------------------------------------------
# flush, shutdown, send=False, sync_mode


def test_flush_and_shutdown_are_bounded_when_the_server_is_down(
    make_client, collector: Collector, queue_file
) -> None:
    collector.refuse()
    client = make_client()
    ids = track_many(client, 5)
    started = time.monotonic()
    assert client.flush(timeout=0.5) is False
    assert client.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 3.0
    assert MessageStore(queue_file).stats().ready == 5
    collector.resume()
    again = make_client()
    assert collector.wait_for(5, timeout=10)
    assert collector.message_ids == set(ids)
    assert again.stats().ready == 0


def test_flush_default_timeout_is_flush_timeout(make_client, collector: Collector) -> None:
    collector.refuse()
    client = make_client(flush_timeout=0.3)
    client.track("u", "e")
    started = time.monotonic()
    assert client.flush() is False
    assert time.monotonic() - started < 2.0


def test_send_false_validates_and_discards(make_client, collector: Collector, queue_file) -> None:
    client = make_client(send=False)
    assert isinstance(client.track("u", "e").message_id, str)
    assert client.flush() is True
    assert client.store is None and not queue_file.exists()
    assert collector.requests == []


def test_sync_mode_delivers_before_the_call_returns(make_client, collector: Collector) -> None:
    client = make_client(sync_mode=True)
    message_id = client.track("u", "e").message_id
    assert collector.message_ids == {message_id}
    assert client._worker._thread is None  # no background thread in sync mode


def test_sync_mode_raises_a_failed_upload_and_keeps_the_message(
    make_client, collector: Collector
) -> None:
    """As segment raises in sync mode; the message stays on disk and goes later."""
    collector.respond_with(503)
    client = make_client(sync_mode=True)
    with pytest.raises(TransientError) as info:
        client.track("u", "first")
    assert (info.value.status, info.value.code) == (503, "transient")
    assert "stays queued on disk" in info.value.message
    assert client.stats().ready == 1 and collector.message_ids == set()
    client.track("u", "second")  # the first waits for its own retry time, then goes too
    assert client.flush(timeout=5)
    assert {m["event"] for m in collector.messages} == {"first", "second"}


def test_sync_mode_raises_a_rejected_message_kept_as_a_dead_letter(
    make_client, collector: Collector
) -> None:
    collector.respond_with(422)
    client = make_client(sync_mode=True)
    with pytest.raises(RejectedError) as info:
        client.track("u", "refused")
    assert (info.value.status, info.value.code) == (422, "rejected")
    assert client.stats().dead == 1


def test_sync_mode_keeps_the_message_when_the_server_is_down(
    make_client, collector: Collector
) -> None:
    collector.refuse()
    client = make_client(sync_mode=True, flush_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransientError, match="stays queued on disk"):
        client.track("u", "e")
    assert time.monotonic() - started < 2.0
    assert client.stats().ready == 1


def test_calls_after_shutdown_are_still_stored(make_client, collector: Collector) -> None:
    client = make_client()
    client.shutdown()
    client.track("u", "late")
    assert client.stats().ready == 1
    assert collector.requests == []


# ------------------------------------------------------------------------------------------------
# Callbacks and resilience


def test_on_delivery_receives_the_accepted_messages(make_client, collector: Collector) -> None:
    delivered: List[str] = []
    client = make_client(on_delivery=lambda batch: delivered.extend(m["messageId"] for m in batch))
    ids = track_many(client, 6)
    assert client.flush()
    assert delivered == ids


def test_worker_survives_exceptions_in_callbacks(make_client, collector: Collector) -> None:
    def explode(batch: List[Dict[str, Any]]) -> None:
        raise RuntimeError("callback bug")

    client = make_client(flush_at=2, on_delivery=explode)
    first = track_many(client, 2)
    assert client.flush()
    second = track_many(client, 2, prefix="again")
    assert client.flush()
    assert collector.message_ids == set(first + second)
    assert client._worker.running


def test_a_row_that_is_not_json_is_dead_lettered_and_the_rest_delivered(
    make_client, collector: Collector, queue_file
) -> None:
    client = make_client(flush_at=100)
    before = client.track("u", "before").message_id
    with sqlite3.connect(queue_file) as raw:
        raw.execute("INSERT INTO messages (data, size, created) VALUES ('{broken', 7, 0)")
    after = client.track("u", "after").message_id
    assert client.flush()
    assert collector.message_ids == {before, after}
    (dead,) = client.store.dead_letters()
    assert dead.data == "{broken" and "not a JSON object" in dead.reason  # never sent
    assert client._worker.running


# ------------------------------------------------------------------------------------------------
# Proxies and fork


class _ForwardingProxy(BaseHTTPRequestHandler):
    """A plain HTTP proxy: requests arrive with an absolute URI and are forwarded."""

    seen: List[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.path)
        target = self.server.target + "/v1/batch"  # type: ignore[attr-defined]
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        answer = requests.post(target, data=body, headers=headers, timeout=5)
        self.send_response(answer.status_code)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(collector: Collector) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    server.target = collector.url  # type: ignore[attr-defined]
    _ForwardingProxy.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_proxies_are_really_used(make_client, collector: Collector, proxy: str) -> None:
    client = make_client(endpoint="http://analytics.example.invalid", proxies={"http": proxy})
    message_id = client.track("u", "via proxy").message_id
    assert client.flush()
    assert _ForwardingProxy.seen == ["http://analytics.example.invalid/v1/batch"]
    assert collector.message_ids == {message_id}


def test_client_created_before_fork_works_in_every_child(make_client, collector: Collector) -> None:
    import os

    client = make_client(flush_at=5)
    parent_id = client.track("parent", "before fork").message_id
    assert client.flush()
    children = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for i in range(10):
                    client.track(f"child-{n}", f"event-{i}")
                code = 0 if client.flush(timeout=10) else 2
            finally:
                os._exit(code)
        children.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert statuses == [0, 0, 0]
    assert collector.wait_for(31, timeout=10)
    by_user: Dict[str, set] = {}
    for message in collector.messages:
        by_user.setdefault(message["userId"], set()).add(message["messageId"])
    assert {user: len(ids) for user, ids in by_user.items()} == {
        "parent": 1,
        "child-0": 10,
        "child-1": 10,
        "child-2": 10,
    }
    # A child that leaves with os._exit() may die while its worker uploads a sibling's batch;
    # that batch is taken back at once and sent again: a redelivery of the same messageIds.
    assert len(collector.messages) - len(collector.message_ids) == collector.duplicates
    assert parent_id in collector.message_ids
    after = client.track("parent", "after fork").message_id  # the parent's worker still runs
    assert client.flush()
    assert after in collector.message_ids


def test_unicode_survives_gzip_and_the_wire(make_client, collector: Collector) -> None:
    client = make_client()
    client.identify("u", {"name": "Ünïcödé"})
    assert client.flush()
    assert collector.messages[0]["traits"] == {"name": "Ünïcödé"}


# ------------------------------------------------------------------------------------------------
# Process exit

EXIT_SCRIPT = """
import sys
from durable_analytics import Client
client = Client("k", endpoint=sys.argv[1], queue_path=sys.argv[2], flush_at=1000,
                flush_interval=60, exit_timeout=float(sys.argv[3]))
for i in range(50):
    client.track("u", "exit-%d" % i)
print("recorded", flush=True)
"""


def test_exit_delivers_what_is_queued_within_exit_timeout(
    collector: Collector, queue_file, child_env
) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, collector.url, str(queue_file), "5"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "recorded"
    assert len(collector.message_ids) == 50
    assert MessageStore(queue_file).stats().ready == 0


def test_exit_is_bounded_when_the_server_is_down(
    collector: Collector, queue_file, child_env
) -> None:
    import subprocess
    import sys

    collector.refuse()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, collector.url, str(queue_file), "0.5"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert MessageStore(queue_file).stats().ready == 50  # all kept for the next run


def _record_in_child(client: Any, count: int) -> None:
    for i in range(count):
        client.track("mp-child", f"event-{i}")


def test_multiprocessing_children_deliver_at_exit(make_client, collector: Collector) -> None:
    """A multiprocessing child ends with os._exit (no atexit): its exit shutdown still runs."""
    import multiprocessing

    client = make_client(flush_at=1000, flush_interval=60.0, exit_timeout=5.0)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_record_in_child, args=(client, 10)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0]
    # Nothing else sends within the parent's 60 s interval: the children delivered at exit.
    assert len(collector.message_ids) == 20
    assert collector.duplicates == 0
    assert client.stats().ready == 0
