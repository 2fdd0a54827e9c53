"""The loopback collector, exercised over real HTTP on 127.0.0.1 with ``requests``."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest
import requests

from durable_analytics.testing import Collector, ReceivedRequest, Response

KEY = "test-key"


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # never route loopback traffic through an environment proxy
    try:
        yield s
    finally:
        s.close()


def msg(mid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": "u1", "event": "Clicked", **extra}


def post(
    session: requests.Session,
    c: Collector,
    messages: Optional[list[dict[str, Any]]] = None,
    *,
    data: Optional[bytes] = None,
    auth: Optional[tuple[str, str]] = (KEY, ""),
    gzipped: bool = False,
    timeout: float = 2.0,
) -> requests.Response:
    if data is None:
        data = json.dumps({"batch": messages or [], "sentAt": "2024-01-01T00:00:00Z"}).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return session.post(c.url + "/v1/batch", data=data, headers=headers, auth=auth, timeout=timeout)


def last(c: Collector) -> ReceivedRequest:
    return c.requests[-1]


def test_accepts_a_batch_and_records_it(collector: Collector, session: requests.Session) -> None:
    body = json.dumps({"batch": [msg("a"), msg("b")], "sentAt": "x"}).encode()
    r = post(session, collector, data=body)

    assert r.status_code == 200
    assert r.json() == {"success": True}
    assert collector.url == f"http://127.0.0.1:{collector.port}"
    assert [m["messageId"] for m in collector.messages] == ["a", "b"]
    assert collector.batches == [[msg("a"), msg("b")]]
    assert collector.message_ids == {"a", "b"}
    assert collector.duplicates == 0
    req = last(collector)
    assert req.path == "/v1/batch"
    assert req.status == 200
    assert req.write_key == KEY
    assert req.gzip is False
    assert req.wire_bytes == req.body_bytes == len(body)
    assert req.headers["Content-Type"] == "application/json"
    assert req.payload == {"batch": [msg("a"), msg("b")], "sentAt": "x"}

    # A redelivery is accepted again, and counted as duplicates.
    assert post(session, collector, [msg("a"), msg("b")]).status_code == 200
    assert len(collector.messages) == 4
    assert collector.message_ids == {"a", "b"}
    assert collector.duplicates == 2
    assert len(collector.batches) == 2


def test_snapshots_are_copies(collector: Collector, session: requests.Session) -> None:
    post(session, collector, [msg("a")])
    collector.messages.clear()
    collector.message_ids.clear()
    collector.requests.clear()
    assert len(collector.messages) == 1
    assert collector.message_ids == {"a"}
    assert len(collector.requests) == 1


def test_gzip_body_is_decoded(collector: Collector, session: requests.Session) -> None:
    messages = [msg(f"m{i}", properties={"text": "x" * 200}) for i in range(20)]
    r = post(session, collector, messages, gzipped=True)

    assert r.status_code == 200
    req = last(collector)
    assert req.gzip is True
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.wire_bytes < req.body_bytes
    assert req.body_bytes == len(json.dumps({"batch": messages, "sentAt": "2024-01-01T00:00:00Z"}))
    assert collector.message_ids == {f"m{i}" for i in range(20)}


def test_bad_gzip_is_400(collector: Collector, session: requests.Session) -> None:
    r = session.post(
        collector.url + "/v1/batch",
        data=b"not gzip at all",
        headers={"Content-Encoding": "gzip"},
        auth=(KEY, ""),
        timeout=2,
    )
    assert r.status_code == 400
    assert "gzip" in r.json()["error"]
    assert collector.messages == []
    assert last(collector).status == 400


def test_auth_with_a_configured_write_key(session: requests.Session) -> None:
    with Collector("right") as c:
        r = post(session, c, [msg("a")], auth=("wrong", ""))
        assert r.status_code == 401
        assert "error" in r.json()
        assert last(c).write_key == "wrong"

        r = post(session, c, [msg("a")], auth=None)
        assert r.status_code == 401
        assert last(c).write_key is None

        assert post(session, c, [msg("a")], auth=("right", "secret")).status_code == 401
        assert c.messages == []

        assert post(session, c, [msg("a")], auth=("right", "")).status_code == 200
        assert last(c).write_key == "right"
        assert [r.status for r in c.requests] == [401, 401, 401, 200]
        assert c.message_ids == {"a"}


def test_any_key_is_accepted_without_a_configured_one(
    collector: Collector, session: requests.Session
) -> None:
    assert post(session, collector, [msg("a")], auth=("whatever", "")).status_code == 200
    assert post(session, collector, [msg("b")], auth=None).status_code == 401
    assert collector.message_ids == {"a"}


def test_body_over_the_limit_is_413(session: requests.Session) -> None:
    with Collector(max_body_bytes=1000) as c:
        big = [msg("big", properties={"text": "x" * 1000})]
        r = post(session, c, big)
        assert r.status_code == 413
        assert last(c).status == 413
        assert last(c).body_bytes > 1000

        # The limit applies to the uncompressed body, however small it is on the wire.
        r = post(session, c, big, gzipped=True)
        assert r.status_code == 413
        assert last(c).wire_bytes < 1000 < last(c).body_bytes
        assert c.messages == []

        assert post(session, c, [msg("small")]).status_code == 200
        assert c.message_ids == {"small"}


def test_message_over_the_limit_is_400_naming_it(session: requests.Session) -> None:
    base = msg("m1", properties={"text": ""})
    base_size = len(json.dumps(base, separators=(",", ":")).encode())
    with Collector(max_message_bytes=base_size + 10) as c:
        exactly = msg("m1", properties={"text": "é" * 5})  # 10 bytes of UTF-8: at the limit
        assert post(session, c, [exactly]).status_code == 200

        over = msg("m2", properties={"text": "é" * 5 + "x"})
        r = post(session, c, [msg("m3"), over])
        assert r.status_code == 400
        assert r.json()["messageIds"] == ["m2"]
        assert c.message_ids == {"m1"}


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[]", b'{"sentAt": "x"}', b'{"batch": {"a": 1}}', b'{"batch": [1, 2]}'],
)
def test_malformed_body_is_400(
    collector: Collector, session: requests.Session, data: bytes
) -> None:
    r = post(session, collector, data=data)
    assert r.status_code == 400
    assert "error" in r.json()
    assert collector.messages == []
    assert last(collector).status == 400


def test_reject_marker_rejects_the_whole_batch(
    collector: Collector, session: requests.Session
) -> None:
    collector.reject_marker = "POISON"
    r = post(
        session, collector, [msg("ok1"), msg("bad", properties={"note": "POISON"}), msg("ok2")]
    )

    assert r.status_code == 400
    assert r.json()["messageIds"] == ["bad"]
    assert collector.messages == []
    assert collector.batches == []
    assert last(collector).payload is not None  # recorded, but not accepted

    assert post(session, collector, [msg("ok1"), msg("ok2")]).status_code == 200
    assert collector.message_ids == {"ok1", "ok2"}


def test_scripted_sequence_then_normal(collector: Collector, session: requests.Session) -> None:
    collector.respond_with(503, Response(429, retry_after="2"))

    r1 = post(session, collector, [msg("a")])
    r2 = post(session, collector, [msg("a")])
    r3 = post(session, collector, [msg("a")])

    assert (r1.status_code, r2.status_code, r3.status_code) == (503, 429, 200)
    assert r2.headers["Retry-After"] == "2"
    assert "Retry-After" not in r1.headers
    assert [r.status for r in collector.requests] == [503, 429, 200]
    assert all(r.payload is not None for r in collector.requests)
    assert [m["messageId"] for m in collector.messages] == ["a"]
    assert collector.duplicates == 0


def test_scripted_success_skips_validation_and_accepts(
    collector: Collector, session: requests.Session
) -> None:
    collector.reject_marker = "POISON"
    collector.respond_with(Response(202, body='{"ok": 1}'))
    r = post(session, collector, [msg("p", note="POISON")], auth=None)
    assert r.status_code == 202
    assert r.json() == {"ok": 1}
    assert collector.message_ids == {"p"}


def test_default_response_until_cleared(collector: Collector, session: requests.Session) -> None:
    collector.set_default(500)
    collector.respond_with(Response(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    r = post(session, collector, [msg("a")])
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert post(session, collector, [msg("a")]).status_code == 500
    assert post(session, collector, [msg("a")]).status_code == 500
    collector.set_default(None)
    assert post(session, collector, [msg("a")]).status_code == 200
    assert collector.message_ids == {"a"}


def test_drop_resets_the_connection(collector: Collector, session: requests.Session) -> None:
    collector.respond_with(Response(drop=True))
    with pytest.raises(requests.ConnectionError):
        post(session, collector, [msg("a")])
    assert last(collector).status == 0
    assert collector.messages == []

    assert post(session, collector, [msg("a")]).status_code == 200
    assert collector.message_ids == {"a"}


def test_delay_causes_a_read_timeout_but_the_batch_lands(
    collector: Collector, session: requests.Session
) -> None:
    collector.respond_with(Response(delay=0.3))
    with pytest.raises(requests.ReadTimeout):
        post(session, collector, [msg("a")], timeout=0.1)

    # The server processed it anyway: a retry is a duplicate, exactly as in production.
    assert collector.wait_for(1, timeout=2)
    assert post(session, collector, [msg("a")]).status_code == 200
    assert collector.duplicates == 1


def test_refuse_then_resume_on_the_same_port(
    collector: Collector, session: requests.Session
) -> None:
    assert post(session, collector, [msg("a")]).status_code == 200  # keep-alive connection open
    port = collector.port

    collector.refuse()
    collector.refuse()  # idempotent
    with pytest.raises(requests.ConnectionError):
        post(session, collector, [msg("b")])
    with pytest.raises(requests.ConnectionError):
        requests.post(collector.url + "/v1/batch", data=b"{}", timeout=1)

    collector.resume()
    assert collector.port == port
    assert post(session, collector, [msg("b")]).status_code == 200
    assert collector.message_ids == {"a", "b"}


def test_out_file_gets_one_json_line_per_accepted_message(
    tmp_path: Any, session: requests.Session
) -> None:
    out = tmp_path / "events.jsonl"
    with Collector(out=out) as c:
        post(session, c, [msg("a"), msg("b", properties={"name": "café"})])
        post(session, c, [msg("c")], auth=None)  # rejected: not written
        # Flushed after each request: readable while the collector still runs.
        lines = out.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == [
            msg("a"),
            msg("b", properties={"name": "café"}),
        ]
        post(session, c, [msg("a")])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["messageId"] for line in lines] == ["a", "b", "a"]


def test_on_message_is_called_for_each_accepted_message(session: requests.Session) -> None:
    seen: list[dict[str, Any]] = []
    with Collector(on_message=seen.append) as c:
        post(session, c, [msg("a"), msg("b")])
        post(session, c, [msg("c")], auth=None)
        assert [m["messageId"] for m in seen] == ["a", "b"]
        assert seen == c.messages


def test_a_failing_on_message_does_not_break_the_server(session: requests.Session) -> None:
    def boom(message: dict[str, Any]) -> None:
        raise RuntimeError("callback failed")

    with Collector(on_message=boom) as c:
        assert post(session, c, [msg("a")]).status_code == 200
        assert post(session, c, [msg("b")]).status_code == 200
        assert c.message_ids == {"a", "b"}
        assert len(c.errors) == 2
        assert "callback failed" in c.errors[0]


def test_wait_for(collector: Collector, session: requests.Session) -> None:
    assert collector.wait_for(0, timeout=0.01) is True
    assert collector.wait_for(1, timeout=0.05) is False
    assert collector.wait_for_requests(1, timeout=0.05) is False

    def send_later() -> None:
        time.sleep(0.05)
        with requests.Session() as s:
            s.trust_env = False
            post(s, collector, [msg("a"), msg("b")])

    thread = threading.Thread(target=send_later)
    thread.start()
    try:
        assert collector.wait_for(2, timeout=2) is True
        assert collector.wait_for_requests(1, timeout=0.01) is True
        assert collector.wait_for(3, timeout=0.05) is False
    finally:
        thread.join()


def test_unknown_path_is_404_and_other_methods_405(
    collector: Collector, session: requests.Session
) -> None:
    r = session.post(collector.url + "/v1/track", json={"batch": []}, auth=(KEY, ""), timeout=2)
    assert r.status_code == 404

    r = session.get(collector.url + "/v1/batch", timeout=2)
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"

    r = session.put(collector.url + "/v1/batch", json={"batch": [msg("a")]}, timeout=2)
    assert r.status_code == 405

    assert [(r.path, r.status) for r in collector.requests] == [
        ("/v1/track", 404),
        ("/v1/batch", 405),
        ("/v1/batch", 405),
    ]
    assert collector.messages == []
    # The connection survived all that.
    assert post(session, collector, [msg("a")]).status_code == 200


def test_reset_forgets_everything(collector: Collector, session: requests.Session) -> None:
    post(session, collector, [msg("a")])
    post(session, collector, [msg("a")])
    collector.respond_with(500, 500)
    collector.set_default(503)
    collector.reject_marker = "a"

    collector.reset()

    assert collector.requests == []
    assert collector.batches == []
    assert collector.messages == []
    assert collector.message_ids == set()
    assert collector.duplicates == 0
    assert collector.reject_marker is None
    assert post(session, collector, [msg("a")]).status_code == 200
    assert collector.message_ids == {"a"}
    assert collector.duplicates == 0


def test_keep_alive_connection_is_reused(collector: Collector) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=2)
    try:
        headers = {"Authorization": "Basic dGVzdC1rZXk6", "Content-Type": "application/json"}
        for mid in ("a", "b"):
            conn.request(
                "POST", "/v1/batch", body=json.dumps({"batch": [msg(mid)]}), headers=headers
            )
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read()) == {"success": True}
            assert resp.will_close is False
        sock = conn.sock
        conn.request("POST", "/v1/batch", body=b"{}", headers=headers)
        assert conn.getresponse().status == 400
        assert conn.sock is sock  # same TCP connection throughout
    finally:
        conn.close()
    assert collector.message_ids == {"a", "b"}
    assert last(collector).write_key == KEY


def test_chunked_body_is_read(collector: Collector, session: requests.Session) -> None:
    body = json.dumps({"batch": [msg("a")]}).encode()
    r = session.post(
        collector.url + "/v1/batch",
        data=iter([body[:10], body[10:]]),  # a generator: requests sends it chunked
        auth=(KEY, ""),
        timeout=2,
    )
    assert r.status_code == 200
    assert last(collector).headers["Transfer-Encoding"] == "chunked"
    assert collector.message_ids == {"a"}


def test_stop_is_quick_with_open_connections_and_idempotent(session: requests.Session) -> None:
    c = Collector().start()
    assert c.start() is c  # already running: no-op
    assert post(session, c, [msg("a")]).status_code == 200  # leaves a keep-alive connection
    c.respond_with(Response(delay=5))
    outcome: list[BaseException] = []

    def slow_post() -> None:
        with requests.Session() as s:
            s.trust_env = False
            try:
                post(s, c, [msg("b")], timeout=3)
            except requests.RequestException as exc:
                outcome.append(exc)

    slow = threading.Thread(target=slow_post)
    slow.start()
    time.sleep(0.1)  # let the slow request reach the server and start its delay

    start = time.monotonic()
    c.stop()
    c.stop()
    assert time.monotonic() - start < 1.0
    slow.join(timeout=2)
    assert not slow.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)
    # The interrupted request, if it got in before stop(), is recorded as dropped (status 0),
    # and nothing of it was accepted.
    assert [r.status for r in c.requests] in ([200], [200, 0])
    assert c.message_ids == {"a"}
    with pytest.raises(requests.ConnectionError):
        post(session, c, [msg("c")])


def test_restart_keeps_the_url(session: requests.Session) -> None:
    c = Collector()
    with pytest.raises(RuntimeError):
        _ = c.url
    with c:
        url = c.url
        post(session, c, [msg("a")])
    with c:
        assert c.url == url
        assert post(session, c, [msg("b")]).status_code == 200
        assert c.message_ids == {"a", "b"}


def test_response_validation() -> None:
    with pytest.raises(ValueError):
        Response(status=99)
    with pytest.raises(ValueError):
        Response(delay=-1)
    with Collector() as c:
        with pytest.raises(TypeError):
            c.respond_with("500")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.reject_marker = ""
