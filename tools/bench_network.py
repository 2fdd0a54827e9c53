"""The network modes of tools/bench.py: the same side-by-side comparison, through a collector
that holds every request for a round trip and fails a share of them (its network mode).

    python tools/bench.py --network                      # all four, full size
    python tools/bench.py --network --scale 0.04 --outage 3   # a quick check of each

1. ``net-e2e``: 200 ms round trip, 50,000 ``track()`` calls with default settings, until the
   collector holds every event: events/s for each library (and for durable-analytics with
   one request in flight, the previous behaviour, where ``max_in_flight`` exists).
2. ``net-drain``: 200,000 queued, ``durable-analytics drain``, with no faults and then with
   20% of requests answered 500: the time ratio, events lost, duplicates.
3. ``net-outage``: four processes on one file while the server fails every request for
   30 s: how many requests they made in all, and how long they took to deliver after.
4. ``net-latency``: ``track()`` median and p99 while uploads are in flight (200 ms each).

Each library runs in a process of its own; the collector too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

from bench import BOTH, ROOT, RemoteCollector, Variants, bench_latency, fill_queue, run_drain

NETWORK_MODES = ("net-e2e", "net-drain", "net-outage", "net-latency")
_STALL = 90.0  # seconds without progress before a wait gives up (longer than any backoff)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, sys
    name, url, queue, options, events = sys.argv[1:6]
    options, events = json.loads(options), int(events)
    props = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}
    if name == "durable":
        logging.getLogger("durable_analytics").setLevel(logging.ERROR)  # retries are expected
        from durable_analytics import Client
        client = Client("bench-key", endpoint=url, queue_path=queue, **options)
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        from segment.analytics import Client
        client = Client("bench-key", host=url, **options)
    prefix = "%d-" % os.getpid()
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(events):
        client.track(prefix + "%06d" % i, "Order Completed", props)
    print("tracked", flush=True)
    sys.stdin.readline()
    if name == "durable":
        client.shutdown(timeout=10)
    os._exit(0)
    """
)


class _Child:
    """One library in a process of its own: told when to start tracking, and when to end."""

    def __init__(
        self, name: str, url: str, queue: Path, options: Dict[str, Any], events: int
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT_SCRIPT, name, url, str(queue), json.dumps(options),
             str(events)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"bench child said {line!r}, expected {word!r} (see stderr)")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def tracked(self) -> None:
        self._expect("tracked")

    def end(self) -> None:
        try:
            self.process.communicate("end\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def _has_max_in_flight() -> bool:
    from durable_analytics.config import Config

    return "max_in_flight" in {spec.name for spec in dataclasses.fields(Config)}


def _e2e_variants() -> Variants:
    variants = dict(BOTH)
    if _has_max_in_flight():
        variants = {
            "durable": BOTH["durable"],
            "durable, 1 in flight": ("durable", {"max_in_flight": 1}),
            "segment": BOTH["segment"],
        }
    return variants


def _ratio(ours: float, base: float) -> float:
    return round(ours / base, 2) if base else 0.0


def bench_net_e2e(
    collector: RemoteCollector, events: int, workdir: Path, delay: float
) -> Dict[str, Any]:
    """From the first call until the collector holds every event, ``delay`` s per request."""
    result: Dict[str, Any] = {"events": events, "delay_s": delay}
    for index, (label, (name, options)) in enumerate(_e2e_variants().items()):
        collector.reset()
        collector.network(delay=delay)
        child = _Child(name, collector.url, workdir / f"net-e2e-{index}.sqlite3", options, events)
        started = time.perf_counter()
        child.go()
        delivered, done = collector.wait_for(events, timeout=1800, stall=max(3.0, 10 * delay))
        counts = collector.counts()
        child.end()
        elapsed = done - started
        result[label] = {
            "events_per_s": round(delivered / elapsed) if elapsed > 0 else 0,
            "seconds": round(elapsed, 2),
            "lost": events - delivered,
            "requests": counts["requests"],
            "peak_in_flight": counts["peak_in_flight"],
        }
    result["ratio"] = _ratio(result["durable"]["events_per_s"], result["segment"]["events_per_s"])
    collector.network()
    return result


def bench_net_drain(
    collector: RemoteCollector, events: int, workdir: Path, fault_rate: float
) -> Dict[str, Any]:
    """``durable-analytics drain`` of ``events``: with no faults, then with ``fault_rate``."""
    result: Dict[str, Any] = {"events": events, "fault_rate": fault_rate}
    for label, rate in (("fault_free", 0.0), ("faulty", fault_rate)):
        collector.reset()
        collector.network(fault_rate=rate, seed=1)
        queue = workdir / f"net-drain-{label}.sqlite3"
        fill_queue(queue, events)
        seconds, code = run_drain(queue, collector.url)
        counts = collector.counts()
        result[label] = {
            "seconds": round(seconds, 2),
            "exit_code": code,
            "lost": events - counts["messages"],
            "duplicates": counts["duplicates"],
            "requests": counts["requests"],
            "faults": counts["faults"],
        }
    result["time_ratio"] = _ratio(result["faulty"]["seconds"], result["fault_free"]["seconds"])
    collector.network()
    return result


def bench_net_outage(
    collector: RemoteCollector, workdir: Path, seconds: float, processes: int = 4
) -> Dict[str, Any]:
    """``processes`` clients on one file while every request fails for ``seconds``."""
    per_process = 1000
    collector.reset()
    collector.network(fault_rate=1.0)
    queue = workdir / "net-outage.sqlite3"
    children = [_Child("durable", collector.url, queue, {}, per_process) for _ in range(processes)]
    for child in children:
        child.go()
    for child in children:
        child.tracked()
    time.sleep(seconds)
    during = collector.counts()
    collector.network()
    resumed = time.perf_counter()
    total = processes * per_process
    delivered, done = collector.wait_for(total, timeout=600, stall=_STALL)
    after = collector.counts()
    for child in children:
        child.end()
    return {
        "processes": processes,
        "outage_s": seconds,
        "requests_during_outage": during["requests"],
        "requests_per_process_per_minute": round(
            during["requests"] / processes / (seconds / 60.0), 1
        ),
        "recovery_s": round(done - resumed, 2),
        "lost": total - delivered,
        "duplicates": after["duplicates"],
    }


def bench_net_latency(
    collector: RemoteCollector, calls: int, workdir: Path, delay: float
) -> Dict[str, Any]:
    """``track()`` per call while uploads of ``delay`` s each are in flight."""
    collector.reset()
    collector.network(delay=delay)
    result = bench_latency(collector, calls, workdir, _e2e_variants())
    result["peak_in_flight"] = collector.counts()["peak_in_flight"]
    collector.network()
    return result


def run_network(
    collector: RemoteCollector,
    wanted: List[str],
    workdir: Path,
    scale: float,
    delay: float,
    fault_rate: float,
    outage: float,
) -> Dict[str, Any]:
    """The network modes asked for, in one run against one collector."""
    results: Dict[str, Any] = {}
    if "net-e2e" in wanted:
        results["net_e2e"] = bench_net_e2e(collector, int(50_000 * scale), workdir, delay)
    if "net-drain" in wanted:
        results["net_drain"] = bench_net_drain(collector, int(200_000 * scale), workdir, fault_rate)
    if "net-outage" in wanted:
        results["net_outage"] = bench_net_outage(collector, workdir, outage)
    if "net-latency" in wanted:
        results["net_latency"] = bench_net_latency(collector, int(20_000 * scale), workdir, delay)
    return results


def network_rows(results: Dict[str, Any]) -> List[tuple]:
    """Table rows (measure, durable, segment, ratio) for what ran."""
    rows: List[tuple] = []
    if "net_e2e" in results:
        r = results["net_e2e"]
        delay_ms = int(r["delay_s"] * 1000)
        rows.append((f"e2e ev/s, {delay_ms} ms RTT", r["durable"]["events_per_s"],
                     r["segment"]["events_per_s"], r["ratio"]))  # fmt: skip
        if "durable, 1 in flight" in r:
            rows.append(("  durable, 1 in flight", r["durable, 1 in flight"]["events_per_s"],
                         None, None))  # fmt: skip
        rows.append(("  events lost", r["durable"]["lost"], r["segment"]["lost"], None))
        rows.append(("  peak requests in flight", r["durable"]["peak_in_flight"],
                     r["segment"]["peak_in_flight"], None))  # fmt: skip
    if "net_drain" in results:
        r = results["net_drain"]
        pct = int(r["fault_rate"] * 100)
        rows.append(("drain s, no faults", r["fault_free"]["seconds"], None, None))
        rows.append((f"drain s, {pct}% 500s", r["faulty"]["seconds"], None, r["time_ratio"]))
        rows.append(("  lost / duplicates", f"{r['faulty']['lost']} / "
                     f"{r['faulty']['duplicates']}", None, None))  # fmt: skip
    if "net_outage" in results:
        r = results["net_outage"]
        rows.append((f"requests in a {r['outage_s']:g} s outage, {r['processes']} procs",
                     r["requests_during_outage"], None, None))  # fmt: skip
        rows.append(("  recovery s / lost", f"{r['recovery_s']} / {r['lost']}", None, None))
    if "net_latency" in results:
        r = results["net_latency"]
        rows.append(("track() median µs, in flight", r["durable"]["median_us"],
                     r["segment"]["median_us"], r["median_ratio"]))  # fmt: skip
        if "durable, 1 in flight" in r:
            rows.append(("  durable, 1 in flight", r["durable, 1 in flight"]["median_us"],
                         None, None))  # fmt: skip
        rows.append(("  peak requests in flight", r["peak_in_flight"], None, None))
    return rows
