"""The collector's debugger page over real HTTP: its files, the JSON it polls (cursor, counts,
faults), bounded memory, the loopback Host check, and that the batch API is untouched by it.
The page itself runs in a real browser in test_debugger_browser.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from durable_analytics.testing import Collector, Network, Response
from durable_analytics.testing.feed import Feed, Recent

KEY = "debugger-key"
STATIC = Path(__file__).resolve().parent.parent / "durable_analytics" / "testing" / "static"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(debugger=True) as c:
        yield c


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


def msg(mid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": "u1", "event": "Clicked", **extra}


def post(session: requests.Session, url: str, batch: list[dict[str, Any]]) -> int:
    body = {"batch": batch, "sentAt": "2024-01-01T00:00:00Z"}
    return session.post(url + "/v1/batch", json=body, auth=(KEY, ""), timeout=5).status_code


def poll(session: requests.Session, url: str, after: int = 0, **params: Any) -> dict[str, Any]:
    r = session.get(url + "/debugger/events", params={"after": after, **params}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    return r.json()


def test_the_page_and_its_files_are_served_from_the_package(
    collector: Collector, session: requests.Session
) -> None:
    expected = {
        "/": "text/html; charset=utf-8",
        "/debugger.js": "text/javascript; charset=utf-8",
        "/debugger.css": "text/css; charset=utf-8",
        "/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected.items():
        r = session.get(collector.url + path, timeout=5)
        assert (r.status_code, r.headers["Content-Type"]) == (200, content_type), path
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    page = session.get(collector.url + "/", timeout=5).text
    assert '<script src="/debugger.js"' in page and 'href="/debugger.css"' in page
    head = session.head(collector.url + "/", timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert collector.requests == []  # the page's own traffic is not batch API traffic


def test_the_shipped_files_fetch_nothing_from_elsewhere() -> None:
    files = {p.name: p.read_text() for p in STATIC.iterdir()}
    assert set(files) == {"index.html", "debugger.js", "debugger.css", "favicon.svg"}
    for name, text in files.items():
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?//""", text, re.I), name
        assert not re.search(r"@import|url\(", text, re.I), name
    assert re.findall(r"fetch\(([^,)]*)", files["debugger.js"]) == [
        '"/debugger/events?after=" + state.cursor'
    ]
    assert "innerHTML" not in files["debugger.js"]  # message contents go in as text only


def test_the_feed_returns_what_arrived_after_the_cursor(
    collector: Collector, session: requests.Session
) -> None:
    empty = poll(session, collector.url)
    assert (empty["cursor"], empty["events"], empty["missed"]) == (0, [], 0)
    assert post(session, collector.url, [msg("a"), msg("b", userId="u2")]) == 200
    first = poll(session, collector.url)
    assert first["cursor"] == 2
    assert [e["message"]["messageId"] for e in first["events"]] == ["a", "b"]
    assert [e["seq"] for e in first["events"]] == [1, 2]
    assert all(isinstance(e["received"], float) for e in first["events"])
    assert poll(session, collector.url, after=2)["events"] == []
    assert post(session, collector.url, [msg("a"), msg("c")]) == 200
    second = poll(session, collector.url, after=first["cursor"])
    assert [(e["message"]["messageId"], e["duplicate"]) for e in second["events"]] == [
        ("a", True),
        ("c", False),
    ]
    assert second["counts"] == {
        "requests": 2,
        "events": 4,
        "distinct": 3,
        "duplicates": 1,
        "rejected": 0,
        "dropped": 0,
    }
    limited = poll(session, collector.url, after=0, limit=1)
    assert ([e["seq"] for e in limited["events"]], limited["missed"]) == ([4], 3)
    bad = session.get(collector.url + "/debugger/events?after=soon", timeout=5)
    assert bad.status_code == 400


def test_counts_and_faults_show_what_was_injected_and_rejected(
    collector: Collector, session: requests.Session
) -> None:
    collector.respond_with(Response(503, retry_after="30"), Response(200, drop=True), 200)
    collector.reject_marker = "poison"
    assert post(session, collector.url, [msg("a")]) == 503
    with pytest.raises(requests.ConnectionError):
        post(session, collector.url, [msg("a")])
    state = poll(session, collector.url)
    assert state["faults"] == {
        "pending": ["200"],
        "default": None,
        "injected": {"503 Retry-After: 30": 1, "connection reset": 1},
        "reject_marker": "poison",
        "network": None,
    }
    assert post(session, collector.url, [msg("a")]) == 200  # the scripted 200
    assert post(session, collector.url, [msg("p", event="poison")]) == 400
    collector.set_default(Response(500, delay=0.01))
    assert post(session, collector.url, [msg("b")]) == 500
    state = poll(session, collector.url)
    assert state["counts"] == {
        "requests": 5,
        "events": 1,
        "distinct": 1,
        "duplicates": 0,
        "rejected": 3,
        "dropped": 1,
    }
    assert state["faults"]["default"] == "500 after 0.01s"
    assert state["faults"]["injected"]["200"] == 1
    collector.reset()
    after_reset = poll(session, collector.url, after=state["cursor"])
    assert after_reset["generation"] == state["generation"] + 1
    assert after_reset["counts"]["requests"] == 0
    assert after_reset["faults"] == {
        "pending": [],
        "default": None,
        "injected": {},
        "reject_marker": None,
        "network": None,
    }


def test_the_network_mode_is_described_with_its_faults(
    collector: Collector, session: requests.Session
) -> None:
    collector.set_network(Network(delay=0.01, fault_rate=1.0))
    assert post(session, collector.url, [msg("a")]) == 500
    state = poll(session, collector.url)
    assert state["faults"]["network"] == (
        "every request held 0.01s, 100% answered 500 at random (1 so far)"
    )
    assert state["counts"]["rejected"] == 1


def test_memory_is_bounded_but_counts_stay_exact(session: requests.Session) -> None:
    with Collector(keep=5, debugger=True) as small:
        for n in range(4):
            batch = [msg(f"m{n}-{i}") for i in range(5)] + [msg("m0-0")]
            assert post(session, small.url, batch) == 200
        # Requests and batches are weighed by their messages: a batch of 6 is over 5 alone.
        assert (len(small.messages), len(small.requests), len(small.batches)) == (5, 1, 1)
        assert [m["messageId"] for m in small.batches[0]] == [m["messageId"] for m in batch]
        assert small.counts.events == 24 and small.counts.duplicates == 4
        assert small.counts.distinct == len(small.message_ids) == 20
        state = poll(session, small.url)
        assert [e["message"]["messageId"] for e in state["events"]] == [
            "m3-1", "m3-2", "m3-3", "m3-4", "m0-0",
        ]  # fmt: skip
        assert (state["cursor"], state["missed"], state["keep"]) == (24, 19, 5)
        assert small.wait_for_requests(4, timeout=0.01)


@pytest.mark.parametrize(
    "cursor, limit, seqs, missed",
    [
        (0, 10, [], 0),  # nothing yet
        (0, 10, [3, 4, 5], 2),  # 1 and 2 were forgotten
        (3, 10, [4, 5], 0),
        (5, 10, [], 0),
        (0, 2, [4, 5], 3),
        (4, 0, [], 1),
        (9, 10, [3, 4, 5], 2),  # a cursor from before a restart starts over
    ],
)
def test_feed_cursor_table(cursor: int, limit: int, seqs: list[int], missed: int) -> None:
    feed = Feed(3)
    if seqs or missed:
        for n in range(5):
            feed.add({"n": n}, duplicate=False, received=0.0)
    entries, left_out = feed.after(cursor, limit)
    assert ([e.seq for e in entries], left_out) == (seqs, missed)


@pytest.mark.parametrize(
    "budget, weights, kept",
    [
        (None, [5, 5, 5], [0, 1, 2]),
        (10, [5, 5, 5], [1, 2]),
        (10, [3, 3, 3, 3], [1, 2, 3]),
        (10, [20], [0]),  # the newest is kept even when it alone is over the budget
        (10, [1, 20], [1]),
        (1, [1, 1, 1], [2]),
    ],
)
def test_recent_keeps_the_newest_within_a_budget_of_messages(
    budget: Any, weights: list[int], kept: list[int]
) -> None:
    recent: Recent[int] = Recent(budget)
    for n, weight in enumerate(weights):
        recent.append(n, weight)
    assert (list(recent), len(recent)) == (kept, len(kept))
    recent.clear()
    recent.append(9, 1)
    assert list(recent) == [9]


def test_feed_keeps_counting_across_a_clear() -> None:
    feed = Feed(2)
    feed.add({}, duplicate=False, received=0.0)
    feed.clear()
    feed.add({}, duplicate=False, received=0.0)
    assert [e.seq for e in feed.after(1, 10)[0]] == [2]
    assert feed.generation == 1
    with pytest.raises(ValueError):
        Feed(0)


@pytest.mark.parametrize(
    "host, status",
    [
        (None, 200),  # requests sends the URL's 127.0.0.1:port
        ("localhost:1234", 200),
        ("[::1]:80", 200),
        ("evil.example", 403),  # DNS rebinding: a web site's name pointing at 127.0.0.1
        ("127.0.0.1.evil.example:80", 403),
        ("", 403),
    ],
)
def test_a_loopback_page_answers_loopback_host_names_only(
    collector: Collector, session: requests.Session, host: Any, status: int
) -> None:
    headers = {} if host is None else {"Host": host}
    for path in ("/", "/debugger/events"):
        assert session.get(collector.url + path, headers=headers, timeout=5).status_code == status


def test_the_batch_api_is_unchanged_beside_the_page(
    collector: Collector, session: requests.Session
) -> None:
    assert session.get(collector.url + "/v1/batch", timeout=5).status_code == 405
    assert session.post(collector.url + "/", json={}, timeout=5).status_code == 404
    assert session.get(collector.url + "/v1/track", timeout=5).status_code == 404
    assert post(session, collector.url, [msg("a")]) == 200
    assert [(r.path, r.status) for r in collector.requests] == [
        ("/v1/batch", 405),
        ("/", 404),
        ("/v1/track", 404),
        ("/v1/batch", 200),
    ]
    with Collector() as plain:  # without debugger=True there is no page
        assert session.get(plain.url + "/", timeout=5).status_code == 404
        assert session.get(plain.url + "/debugger/events", timeout=5).status_code == 404


def test_collect_serves_the_page_on_its_port(child_env: dict, tmp_path: Path) -> None:
    env = {k: v for k, v in child_env.items() if not k.startswith("DURABLE_ANALYTICS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", "collect", "--port", "0", "--keep", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) .*debugger page at \1/;", banner)
        assert match, banner
        url = match.group(1)
        with requests.Session() as s:
            s.trust_env = False
            assert "durable-analytics debugger" in s.get(url + "/", timeout=5).text
            assert post(s, url, [msg("a"), msg("b"), msg("c")]) == 200
            state = poll(s, url)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert [e["message"]["messageId"] for e in state["events"]] == ["b", "c"]
    assert state["counts"]["events"] == 3
    assert len(stdout.splitlines()) == 3
    assert "3 event(s) in 1 request(s), 0 duplicate(s)" in stderr
    assert json.loads(json.dumps(state))  # plain JSON all the way down
