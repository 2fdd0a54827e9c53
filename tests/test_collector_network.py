"""The collector's network mode: every batch request held for a round trip, a seeded share
failed at random; from Python and from ``durable-analytics collect``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
import requests

from durable_analytics.testing import Collector, Network

BATCH = {"batch": [{"type": "track", "userId": "u", "event": "e"}], "sentAt": "x"}


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


def _statuses(url: str, session: requests.Session, count: int) -> List[int]:
    out = []
    for index in range(count):
        body = {**BATCH, "batch": [{**BATCH["batch"][0], "messageId": f"m{index}"}]}
        out.append(
            session.post(url + "/v1/batch", json=body, auth=("k", ""), timeout=10).status_code
        )
    return out


def test_a_share_of_requests_fails_at_random_the_same_way_for_a_seed(
    session: requests.Session,
) -> None:
    runs = []
    for _ in range(2):
        with Collector(network=Network(fault_rate=0.3, seed=7)) as collector:
            runs.append(_statuses(collector.url, session, 60))
            assert collector.network_faults == runs[-1].count(500)
            assert len(collector.message_ids) == runs[-1].count(200)  # a fault accepts nothing
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}
    assert 6 <= runs[0].count(500) <= 36
    with Collector(network=Network(fault_rate=0.3, seed=8)) as collector:
        assert _statuses(collector.url, session, 60) != runs[0]


def test_every_request_is_held_for_the_delay_also_in_parallel(
    session: requests.Session,
) -> None:
    with Collector(network=Network(delay=0.2)) as collector:
        started = time.monotonic()
        assert _statuses(collector.url, session, 2) == [200, 200]
        assert time.monotonic() - started >= 0.4  # held, each in turn
        results: List[int] = []
        threads = [
            threading.Thread(target=lambda: results.extend(_statuses(collector.url, requests, 1)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [200] * 4
        assert 1 <= collector.network_peak <= 4
        assert len(collector.requests) == 6 and collector.duplicates == 4
        collector.set_network(None)
        assert _statuses(collector.url, session, 1) == [200]


def test_stopping_ends_a_hold_at_once(session: requests.Session) -> None:
    collector = Collector(network=Network(delay=30)).start()
    errors: List[Exception] = []

    def post() -> None:
        try:
            _statuses(collector.url, requests, 1)  # type: ignore[arg-type]
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.2)  # the request is on its way in; how far it got does not matter
    started = time.monotonic()
    collector.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert errors


@pytest.mark.parametrize(
    "options",
    [{"delay": -1}, {"fault_rate": 1.5}, {"fault_rate": -0.1}, {"fault_status": 404}],
)
def test_a_bad_network_is_refused(options: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Network(**options)


def _collect(child_env: Dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", "collect", "--port", "0", *args],
        env={**child_env, "NO_PROXY": "127.0.0.1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_collect_takes_a_delay_and_a_fault_rate(
    child_env: Dict[str, str], session: requests.Session
) -> None:
    proc = _collect(child_env, "--delay", "0.05", "--fault-rate", "0.5", "--seed", "3")
    assert proc.stderr is not None
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", proc.stderr.readline())
    assert match, proc.communicate()
    try:
        statuses = _statuses(match.group(1), session, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    with Collector(network=Network(fault_rate=0.5, seed=3)) as same:
        assert _statuses(same.url, session, 20) == statuses
    assert f"{statuses.count(500)} injected fault(s)" in stderr


def test_collect_refuses_a_fault_rate_above_one(child_env: Dict[str, str]) -> None:
    proc = _collect(child_env, "--fault-rate", "2")
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode != 0
    assert "fault_rate must be between 0 and 1" in stderr
