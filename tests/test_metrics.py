"""Prometheus metrics: the one mapping from stats() to metric families, checked as a table and
read back by prometheus_client's own text parser, both from ``durable-analytics stats
--format prometheus`` (a real subprocess on a real queue file) and from the in-process
:class:`QueueMetrics` collector registered with a real prometheus_client registry."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
from cli_helpers import cli, fill, kill_into_dead_letters
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from durable_analytics import Client
from durable_analytics.metrics import QueueMetrics, metric_families, render
from durable_analytics.store import MessageStore
from durable_analytics.testing import Collector, Response

EVERY_FIGURE = {
    "durable_analytics_ready_messages": "gauge",
    "durable_analytics_leased_messages": "gauge",
    "durable_analytics_dead_letters": "gauge",
    "durable_analytics_dropped": "counter",
    "durable_analytics_delivered": "counter",
    "durable_analytics_failed_uploads": "counter",
    "durable_analytics_queued_bytes": "gauge",
    "durable_analytics_file_bytes": "gauge",
    "durable_analytics_oldest_message_age_seconds": "gauge",
    "durable_analytics_next_retry_timestamp_seconds": "gauge",
    "durable_analytics_breaker_open": "gauge",
}
BREAKER_FIGURES = {
    "durable_analytics_retrying_messages",
    "durable_analytics_failures_in_a_row",
    "durable_analytics_breaker_state",
}


@dataclass
class FakeStats:
    """Stand-in for a future Stats with more figures (the mapping reads as_dict() only)."""

    values: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.values)


def base(path: str = "/q.sqlite3", **extra: Any) -> FakeStats:
    values = {
        "path": path, "ready": 3, "leased": 1, "dead": 2, "dropped": 4, "delivered": 10,
        "failed_uploads": 6,        "queued_bytes": 500, "bytes": 8192, "oldest_age_seconds": 12.5,
        "last_error": "HTTP 400: bad", "retry_at": None,
    }  # fmt: skip
    values.update(extra)
    return FakeStats(values)


def parsed(text: str) -> Dict[str, Any]:
    """name -> (type, help, {queue label: value}) as prometheus_client reads the text."""
    result = {}
    for family in text_string_to_metric_families(text):
        values = {}
        for sample in family.samples:
            assert sample.name in (family.name, family.name + "_total"), sample.name
            values[tuple(sorted(sample.labels.items()))] = sample.value
        result[family.name] = (family.type, family.documentation, values)
    return result


def test_every_figure_maps_to_one_family_with_a_queue_label() -> None:
    families = parsed(render(metric_families([base()])))
    assert {name: kind for name, (kind, _, _) in families.items()} == EVERY_FIGURE
    q = (("queue", "/q.sqlite3"),)
    assert {name: values for name, (_, _, values) in families.items()} == {
        "durable_analytics_ready_messages": {q: 3},
        "durable_analytics_leased_messages": {q: 1},
        "durable_analytics_dead_letters": {q: 2},
        "durable_analytics_dropped": {q: 4},
        "durable_analytics_delivered": {q: 10},
        "durable_analytics_failed_uploads": {q: 6},
        "durable_analytics_queued_bytes": {q: 500},
        "durable_analytics_file_bytes": {q: 8192},
        "durable_analytics_oldest_message_age_seconds": {q: 12.5},
        "durable_analytics_next_retry_timestamp_seconds": {q: 0},  # None: nothing to wait for
        "durable_analytics_breaker_open": {q: 0},
    }
    assert all(help_text for _, help_text, _ in families.values())


@pytest.mark.parametrize(
    "extra, name, kind, labels, value",
    [
        ({"filtered": 7}, "durable_analytics_filtered", "counter", {}, 7),
        ({"breaker": "open"}, "durable_analytics_breaker_state", "gauge", {"state": "open"}, 1),
        (
            {"breaker_state": "half-open"},
            "durable_analytics_breaker_state",
            "gauge",
            {"state": "half-open"},
            1,
        ),
        ({"breaker_open": True}, "durable_analytics_breaker_open", "gauge", {}, 1),
        ({"failed": 3}, "durable_analytics_failed", "gauge", {}, 3),  # unknown: still exported
        ({"oldest_age_seconds": None}, "durable_analytics_oldest_message_age_seconds", "gauge",
         {}, 0),
    ],
)  # fmt: skip
def test_figures_added_to_stats_are_exported_too(
    extra: Dict[str, Any], name: str, kind: str, labels: Dict[str, str], value: float
) -> None:
    families = parsed(render(metric_families([base(**extra)])))
    got_kind, _, values = families[name]
    assert got_kind == kind
    assert values == {tuple(sorted({"queue": "/q.sqlite3", **labels}.items())): value}


def test_texts_are_not_labels_and_odd_paths_are_escaped() -> None:
    path = 'C:\\data\\"odd"\nname.sqlite3'
    text = render(metric_families([base(path, last_error="x" * 500, mode="fast")]))
    assert "HTTP 400" not in text and "xxx" not in text and "fast" not in text
    families = parsed(text)
    assert families["durable_analytics_ready_messages"][2] == {(("queue", path),): 3}


def test_several_queues_share_each_family() -> None:
    families = metric_families([base("/a"), base("/b", ready=9)])
    ready = next(f for f in families if f.name == "durable_analytics_ready_messages")
    assert ready.samples == (((("queue", "/a"),), 3.0), ((("queue", "/b"),), 9.0))
    assert [f.name for f in families] == [f.name for f in metric_families([base("/a")])]


@pytest.mark.parametrize(
    "retry_at, now, open_",
    [(None, 100.0, 0), (0, 100.0, 0), (99.0, 100.0, 0), (100.0, 100.0, 0), (100.5, 100.0, 1)],
)
def test_breaker_is_open_until_the_shared_backoff_ends(
    retry_at: Optional[float], now: float, open_: int
) -> None:
    families = {f.name: f for f in metric_families([base(retry_at=retry_at)], now=now)}
    assert families["durable_analytics_breaker_open"].samples == (
        ((("queue", "/q.sqlite3"),), float(open_)),
    )
    retry = families["durable_analytics_next_retry_timestamp_seconds"].samples[0][1]
    assert retry == (retry_at or 0)


def test_stats_shows_the_breaker_of_a_file_in_backoff(
    keyed: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 3)
    store = MessageStore.open(queue_file)
    try:
        owner = store.new_owner()
        lease = store.lease(owner, max_messages=3, max_bytes=1 << 30, lease_seconds=30)
        assert lease is not None
        until = time.time() + 3600
        store.release(owner, lease.ids, error="HTTP 503: down", retry_at=until)
    finally:
        store.close()
    families = parsed(cli("stats", "--format", "prometheus", env=keyed).stdout)
    q = (("queue", str(queue_file)),)
    assert families["durable_analytics_breaker_open"][2] == {q: 1}
    assert families["durable_analytics_next_retry_timestamp_seconds"][2] == {q: until}
    assert families["durable_analytics_ready_messages"][2] == {q: 3}


@pytest.mark.parametrize(
    "value, text", [(3.0, "3"), (12.5, "12.5"), (float("nan"), "NaN"), (math.inf, "+Inf")]
)
def test_values_are_written_the_way_prometheus_reads_them(value: float, text: str) -> None:
    line = render(metric_families([base(ready=value)])).splitlines()[2]
    assert line == f'durable_analytics_ready_messages{{queue="/q.sqlite3"}} {text}'


def test_stats_format_prometheus_exact_output(env: Dict[str, str], queue_file: Path) -> None:
    fill(queue_file, 0)
    result = cli("stats", "--queue", str(queue_file), "--format", "prometheus", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    store = MessageStore.open(queue_file)
    try:
        file_bytes = store.stats().file_bytes
    finally:
        store.close()
    q = f'{{queue="{queue_file}"}}'
    assert result.stdout == (
        "# HELP durable_analytics_ready_messages Messages stored and waiting to be sent.\n"
        "# TYPE durable_analytics_ready_messages gauge\n"
        f"durable_analytics_ready_messages{q} 0\n"
        "# HELP durable_analytics_leased_messages Messages a sender has taken and not yet "
        "settled.\n"
        "# TYPE durable_analytics_leased_messages gauge\n"
        f"durable_analytics_leased_messages{q} 0\n"
        "# HELP durable_analytics_dead_letters Messages the server rejected for good, kept as "
        "dead letters.\n"
        "# TYPE durable_analytics_dead_letters gauge\n"
        f"durable_analytics_dead_letters{q} 0\n"
        "# HELP durable_analytics_dropped_total Messages dropped because the queue was full, "
        "all time.\n"
        "# TYPE durable_analytics_dropped_total counter\n"
        f"durable_analytics_dropped_total{q} 0\n"
        "# HELP durable_analytics_filtered_total Messages a before_send hook chose not to "
        "record, all time.\n"
        "# TYPE durable_analytics_filtered_total counter\n"
        f"durable_analytics_filtered_total{q} 0\n"
        "# HELP durable_analytics_wal_lost_total Times a process found the -wal/-shm files "
        "taken away under it (messages may be lost).\n"
        "# TYPE durable_analytics_wal_lost_total counter\n"
        f"durable_analytics_wal_lost_total{q} 0\n"
        "# HELP durable_analytics_delivered_total Messages the server accepted, all time.\n"
        "# TYPE durable_analytics_delivered_total counter\n"
        f"durable_analytics_delivered_total{q} 0\n"
        "# HELP durable_analytics_failed_uploads_total Upload attempts that failed (their "
        "messages were kept and retried), all time.\n"
        "# TYPE durable_analytics_failed_uploads_total counter\n"
        f"durable_analytics_failed_uploads_total{q} 0\n"
        "# HELP durable_analytics_queued_bytes JSON bytes of the messages in the file (ready, "
        "leased, dead).\n"
        "# TYPE durable_analytics_queued_bytes gauge\n"
        f"durable_analytics_queued_bytes{q} 0\n"
        "# HELP durable_analytics_file_bytes Bytes the queue file takes on disk.\n"
        "# TYPE durable_analytics_file_bytes gauge\n"
        f"durable_analytics_file_bytes{q} {file_bytes}\n"
        "# HELP durable_analytics_oldest_message_age_seconds Age of the oldest message "
        "waiting; 0 when none is.\n"
        "# TYPE durable_analytics_oldest_message_age_seconds gauge\n"
        f"durable_analytics_oldest_message_age_seconds{q} 0\n"
        "# HELP durable_analytics_next_retry_timestamp_seconds When senders may try again "
        "after a failure (Unix time); 0 when they need not wait.\n"
        "# TYPE durable_analytics_next_retry_timestamp_seconds gauge\n"
        f"durable_analytics_next_retry_timestamp_seconds{q} 0\n"
        "# HELP durable_analytics_retrying_messages Messages of failed batches waiting for "
        "their own retry time (part of ready).\n"
        "# TYPE durable_analytics_retrying_messages gauge\n"
        f"durable_analytics_retrying_messages{q} 0\n"
        "# HELP durable_analytics_failures_in_a_row Uploads that failed in a row across the "
        "file.\n"
        "# TYPE durable_analytics_failures_in_a_row gauge\n"
        f"durable_analytics_failures_in_a_row{q} 0\n"
        "# HELP durable_analytics_breaker_open 1 while every sender on the file waits out a "
        "failure (the shared backoff, until next_retry_timestamp_seconds), else 0.\n"
        "# TYPE durable_analytics_breaker_open gauge\n"
        f"durable_analytics_breaker_open{q} 0\n"
        "# HELP durable_analytics_breaker_state stats() 'breaker': 1 for the current state "
        "(the state label).\n"
        "# TYPE durable_analytics_breaker_state gauge\n"
        f'durable_analytics_breaker_state{{queue="{queue_file}",state="closed"}} 1\n'
    )
    assert parsed(result.stdout)  # and prometheus_client reads it


def test_stats_format_prometheus_of_a_busy_queue(keyed: Dict[str, str], queue_file: Path) -> None:
    fill(queue_file, 5)
    kill_into_dead_letters(queue_file, 2)
    result = cli("stats", "--format", "prometheus", env=keyed)
    assert result.returncode == 0, result.stderr
    families = parsed(result.stdout)
    q = (("queue", str(queue_file)),)
    assert families["durable_analytics_ready_messages"][2] == {q: 3}
    assert families["durable_analytics_dead_letters"][2] == {q: 2}
    assert families["durable_analytics_oldest_message_age_seconds"][2][q] >= 0
    same = json.loads(cli("stats", "--json", env=keyed).stdout)
    assert same.keys() == json.loads(cli("stats", "--format", "json", env=keyed).stdout).keys()
    watched = cli("stats", "--format", "prometheus", "--watch", env=keyed)
    assert watched.returncode == 2 and "for Prometheus, run stats from a timer" in watched.stderr


def test_queue_metrics_in_a_running_process(
    collector: Collector, make_client: Callable[..., Client], queue_file: Path
) -> None:
    client = make_client(before_send=lambda m: None if m.get("event") == "Secret" else m)
    client.track(user_id="u1", event="Secret")  # filtered out: never stored
    collector.respond_with(Response(400))
    client.track(user_id="u1", event="Rejected")
    assert client.flush(10)
    client.track(user_id="u1", event="Delivered")
    assert client.flush(10)
    registry = CollectorRegistry()
    registry.register(QueueMetrics(client))
    families = parsed(generate_latest(registry).decode())
    q = (("queue", str(queue_file)),)
    assert families["durable_analytics_dead_letters"][2] == {q: 1}
    assert families["durable_analytics_delivered"][2] == {q: 1}
    assert families["durable_analytics_filtered"][2] == {q: 1}
    assert families["durable_analytics_filtered"][0] == "counter"
    assert families["durable_analytics_ready_messages"][2] == {q: 0}
    assert families["durable_analytics_delivered"][0] == "counter"
    assert set(families) == (
        set(EVERY_FIGURE)
        | {"durable_analytics_filtered", "durable_analytics_wal_lost"}
        | BREAKER_FIGURES
    )
    # The same figures as the command prints for the same file.
    text = render(metric_families([client.stats()]))
    assert {
        n: v for n, (_, _, v) in parsed(text).items() if "age" not in n and "retry" not in n
    } == {n: v for n, (_, _, v) in families.items() if "age" not in n and "retry" not in n}
    client.track(user_id="u1", event="Waiting")  # read at scrape time, not at register time
    later = parsed(generate_latest(registry).decode())
    assert later["durable_analytics_ready_messages"][2][q] in (0, 1)
    with pytest.raises(TypeError):
        QueueMetrics()


def test_failed_uploads_total_counts_every_failed_attempt_of_every_client_on_the_file(
    collector: Collector,
    make_client: Callable[..., Client],
    keyed: Dict[str, str],
    queue_file: Path,
) -> None:
    """Three uploads answered 500 by the collector, whichever of two clients (two store objects
    on one file) sent them: the file counts 3, after the successes that reset the run, and the
    command (another process) and the in-process collector export the same counter."""
    first = make_client(flush_at=1, max_batch_messages=1, max_in_flight=1)
    second = make_client(flush_at=1, max_batch_messages=1, max_in_flight=1)
    collector.respond_with(500, 500, 500)
    first.track(user_id="u1", event="First")
    second.track(user_id="u2", event="Second")
    assert first.flush(10) and second.flush(10)
    assert collector.wait_for(2, timeout=10)
    assert len(collector.requests) == 5
    for client in (first, second):
        stats = client.stats()
        assert (stats.delivered, stats.failures_in_a_row, stats.failed_uploads) == (2, 0, 3)
    assert json.loads(cli("stats", "--json", env=keyed).stdout)["failed_uploads"] == 3
    assert (
        "failed uploads  3 (attempts kept and retried, all time)\n"
        in cli("stats", env=keyed).stdout
    )
    families = parsed(cli("stats", "--format", "prometheus", env=keyed).stdout)
    q = (("queue", str(queue_file)),)
    assert families["durable_analytics_failed_uploads"][:1] == ("counter",)
    assert families["durable_analytics_failed_uploads"][2] == {q: 3}
    registry = CollectorRegistry()
    registry.register(QueueMetrics(first))
    scraped = parsed(generate_latest(registry).decode())
    assert (
        scraped["durable_analytics_failed_uploads"] == families["durable_analytics_failed_uploads"]
    )


def test_queue_metrics_uses_only_what_stats_returns() -> None:
    class Source:
        def stats(self) -> Optional[FakeStats]:
            return base("/x", breaker="closed")

    registry = CollectorRegistry()
    registry.register(QueueMetrics(Source(), Source()))
    families = parsed(generate_latest(registry).decode())
    assert families["durable_analytics_breaker_state"][2] == {
        (("queue", "/x"), ("state", "closed")): 1
    }
