"""Concurrency: many takers on one file at once, and nothing is lost or delivered twice.

No process is killed here, so every duplicate would be a bug: two takers holding one row.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import List

from reliability_helpers import cli_available, concurrency_campaign, suite_seed

from durable_analytics.testing import Collector


def test_producers_drains_and_a_client_share_one_file(tmp_path: Path) -> None:
    seed = suite_seed()
    report = concurrency_campaign(tmp_path, seed=seed, producers=4, library_drains=2, cli_drains=1)
    summary = report.as_dict()
    print(summary)
    why = f"seed={seed}: {summary}; duplicate ids {report.duplicate_ids[:20]}"

    assert report.producer_exit_codes == [0, 0, 0, 0], f"{why}; stderr {report.stderr}"
    assert len(report.recorded) == 4 * 400 + 100, why
    assert report.lost == [], why
    assert report.duplicates == 0, why
    assert report.leftovers == {"ready": 0, "leased": 0, "dead": 0}, why
    assert len(report.drain_results) == 2 and all("delivered" in r for r in report.drain_results)
    if cli_available():
        assert report.cli_drains, why
        assert all(run["exit_code"] == 0 for run in report.cli_drains), why
    assert report.collector_errors == [], why
    assert not any("Traceback" in text for text in report.stderr), report.stderr


def test_threads_and_two_clients_in_one_process(make_client, collector: Collector) -> None:
    """Two clients (two workers) on one file, each called from several threads at once."""
    first = make_client(flush_at=5, max_batch_messages=13)
    second = make_client(flush_at=3, max_batch_messages=7)
    recorded: List[str] = []
    lock = threading.Lock()

    def record(client, name: str) -> None:
        for n in range(100):
            message_id = client.track(
                name, "Threaded", {"n": n}, message_id=f"{name}-{n}"
            ).message_id
            with lock:
                recorded.append(message_id)

    threads = [
        threading.Thread(target=record, args=(client, f"t{index}-{label}"))
        for index in range(4)
        for label, client in (("a", first), ("b", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert first.flush() and second.flush()
    assert len(recorded) == 800
    assert collector.message_ids == set(recorded)
    assert collector.duplicates == 0
    stats = first.stats()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 0)
