"""A queue's figures as Prometheus metrics: one mapping from :meth:`Client.stats` to metric
families, written out by ``durable-analytics stats --format prometheus`` (the text format,
standard library only) and by :class:`QueueMetrics` from inside a running process (the
``[prometheus]`` extra's ``prometheus_client``).

Every figure ``stats()`` has is exported, each with a ``queue`` label (the queue file's path):
the known ones under the names in docs/operations.md, any other number as a gauge named after
its field, and a state (e.g. a circuit breaker's) as a one-hot ``..._state{state=...}``.
Texts (``last_error``) are not: a label made of error messages would grow without bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["Family", "QueueMetrics", "metric_families", "render"]

PREFIX = "durable_analytics_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """One metric: its full name (counters end in ``_total``), type, help and samples."""

    name: str
    type: str  # "gauge" or "counter"
    help: str
    samples: Tuple[Tuple[Labels, float], ...]


@dataclass(frozen=True)
class _Figure:
    name: str
    type: str
    help: str


# stats().as_dict() key -> how it is exported. Missing values (None) are exported as 0: an
# empty queue has no oldest message, and "older than an hour" must still evaluate.
_FIGURES: Dict[str, _Figure] = {
    "ready": _Figure("ready_messages", "gauge", "Messages stored and waiting to be sent."),
    "leased": _Figure(
        "leased_messages", "gauge", "Messages a sender has taken and not yet settled."
    ),
    "dead": _Figure(
        "dead_letters", "gauge", "Messages the server rejected for good, kept as dead letters."
    ),
    "dropped": _Figure(
        "dropped_total", "counter", "Messages dropped because the queue was full, all time."
    ),
    "filtered": _Figure(
        "filtered_total", "counter", "Messages a before_send hook chose not to record, all time."
    ),
    "wal_lost": _Figure(
        "wal_lost_total",
        "counter",
        "Times a process found the -wal/-shm files taken away under it (messages may be lost).",
    ),
    "delivered": _Figure("delivered_total", "counter", "Messages the server accepted, all time."),
    "failed_uploads": _Figure(
        "failed_uploads_total",
        "counter",
        "Upload attempts that failed (their messages were kept and retried), all time.",
    ),
    "queued_bytes": _Figure(
        "queued_bytes", "gauge", "JSON bytes of the messages in the file (ready, leased, dead)."
    ),
    "bytes": _Figure("file_bytes", "gauge", "Bytes the queue file takes on disk."),
    "oldest_age_seconds": _Figure(
        "oldest_message_age_seconds",
        "gauge",
        "Age of the oldest message waiting; 0 when none is.",
    ),
    "buffered_pending": _Figure(
        "buffered_messages",
        "gauge",
        "Messages a durability='buffered' client holds in memory, not committed yet.",
    ),
    "buffered_committed": _Figure(
        "buffered_committed_total", "counter", "Messages a buffered client committed."
    ),
    "buffered_failed": _Figure(
        "buffered_failed_total",
        "counter",
        "Messages a buffered client could not commit (lost, logged as errors).",
    ),
    "retry_at": _Figure(
        "next_retry_timestamp_seconds",
        "gauge",
        "When senders may try again after a failure (Unix time); 0 when they need not wait.",
    ),
    "retrying": _Figure(
        "retrying_messages",
        "gauge",
        "Messages of failed batches waiting for their own retry time (part of ready).",
    ),
    "failures_in_a_row": _Figure(
        "failures_in_a_row", "gauge", "Uploads that failed in a row across the file."
    ),
}
_NOT_EXPORTED = {"path", "last_error", "endpoint", "max_queue_messages", "max_queue_bytes"}
_BREAKER = PREFIX + "breaker_open"
_BREAKER_HELP = (
    "1 while every sender on the file waits out a failure (the shared backoff, until "
    "next_retry_timestamp_seconds), else 0."
)


def metric_families(all_stats: Iterable[Any], now: Optional[float] = None) -> List[Family]:
    """The metric families for one or more queues' ``stats()`` (one sample per queue).

    Pure given ``now`` (default: the clock, read once): the same stats give the same
    families, in a stable order (the table's, then any other figure's by name).
    """
    now = time.time() if now is None else now
    samples: Dict[str, List[Tuple[Labels, float]]] = {}
    kinds: Dict[str, Tuple[str, str]] = {}
    for stats in all_stats:
        figures = stats.as_dict()
        queue = (("queue", str(figures.get("path", ""))),)
        for key, value in figures.items():
            for name, kind, text, labels, number in _export(key, value, queue, now):
                kinds.setdefault(name, (kind, text))
                samples.setdefault(name, []).append((labels, number))
    known = [PREFIX + figure.name for figure in _FIGURES.values()] + [_BREAKER]
    order = [n for n in known if n in samples] + sorted(set(samples) - set(known))
    return [Family(n, kinds[n][0], kinds[n][1], tuple(samples[n])) for n in order]


def _export(
    key: str, value: Any, queue: Labels, now: float
) -> Iterator[Tuple[str, str, str, Labels, float]]:
    figure = _FIGURES.get(key)
    if key in _NOT_EXPORTED:
        return
    if figure is not None:
        yield PREFIX + figure.name, figure.type, figure.help, queue, _number(value)
        if key == "retry_at":  # the file-wide breaker: open until the shared backoff ends
            yield _BREAKER, "gauge", _BREAKER_HELP, queue, float(bool(value) and value > now)
    elif isinstance(value, str) and _is_state(key):
        name = PREFIX + (key if key.endswith("_state") else key + "_state")
        text = f"stats() {key!r}: 1 for the current state (the state label)."
        yield name, "gauge", text, queue + (("state", value),), 1.0
    elif isinstance(value, (int, float)):  # a figure added to stats() since this table
        yield PREFIX + key, "gauge", f"stats() figure {key!r}.", queue, _number(value)


def _is_state(key: str) -> bool:
    """A named state (e.g. a circuit breaker's "open"), exported one-hot: a small, fixed set
    of values, unlike free text."""
    return "breaker" in key or key == "state" or key.endswith("_state")


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)


# --------------------------------------------------------------------------------------------
# The text format (what a scrape or the node exporter's textfile collector reads)


def render(families: Sequence[Family]) -> str:
    """The families in the Prometheus text exposition format (version 0.0.4)."""
    lines: List[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples:
            pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{family.name}{{{pairs}}} {_format(value)}")
    return "".join(line + "\n" for line in lines)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


# --------------------------------------------------------------------------------------------
# prometheus_client (optional: pip install 'durable-analytics[prometheus]')


class QueueMetrics:
    """A ``prometheus_client`` collector: on every scrape, the figures of each source's
    queue (a :class:`~durable_analytics.Client`, or anything with a ``stats()`` method).

    >>> from prometheus_client import REGISTRY
    >>> REGISTRY.register(QueueMetrics(client))  # doctest: +SKIP

    The figures are read from the queue file when scraped, so they are the same ones every
    process using the file, and ``durable-analytics stats``, see.
    """

    def __init__(self, *sources: Any) -> None:
        if not sources:
            raise TypeError("QueueMetrics needs at least one client (or object with stats())")
        self._sources = sources

    def describe(self) -> List[Any]:
        """Nothing up front: the families depend on the queues' figures at scrape time."""
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for family in metric_families(source.stats() for source in self._sources):
            label_names = [name for name, _ in family.samples[0][0]]
            metric: Any
            if family.type == "counter":
                metric = CounterMetricFamily(
                    family.name[: -len("_total")], family.help, labels=label_names
                )
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=label_names)
            for labels, value in family.samples:
                metric.add_metric([v for _, v in labels], value)
            yield metric
