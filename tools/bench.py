"""Benchmark durable-analytics against segment-analytics-python, side by side in one run.

Both libraries run in their documented default configuration against the same loopback
collector (in a process of its own, so its CPU does not count against either client), with
the same ~300-byte track message. Figures are noisy on a shared machine; the ratios, taken in
one run, are what to read.

    python -m pip install -e '.[bench]'
    python tools/bench.py                 # full run, a few minutes
    python tools/bench.py --quick         # smaller counts, under a minute
    python tools/bench.py --json out.json # also write the figures as JSON
    python tools/bench.py --network       # through a far, flaky network: tools/bench_network.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROPERTIES = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}

COLLECTOR = textwrap.dedent(
    """
    import sys
    from durable_analytics.testing import Collector, Network
    collector = Collector().start()
    print(collector.url, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "count":
            print(len(collector.message_ids), len(collector.requests), collector.duplicates,
                  collector.network_faults, collector.network_peak, flush=True)
        elif command == "reset":
            collector.reset()
            print("ok", flush=True)
        elif command == "network":  # delay fault_rate seed
            delay, rate, seed = float(args[0]), float(args[1]), int(args[2])
            collector.set_network(Network(delay=delay, fault_rate=rate, seed=seed))
            print("ok", flush=True)
        else:
            break
    collector.stop()
    """
)


class RemoteCollector:
    """The loopback collector in a child process, asked for its counts over a pipe."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", COLLECTOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def count(self) -> int:
        return int(self._ask("count").split()[0])

    def requests(self) -> int:
        return int(self._ask("count").split()[1])

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> Dict[str, int]:
        """Distinct messages, requests, duplicates, injected faults, most requests held at once."""
        names = ("messages", "requests", "duplicates", "faults", "peak_in_flight")
        return dict(zip(names, map(int, self._ask("count").split())))

    def network(self, delay: float = 0.0, fault_rate: float = 0.0, seed: int = 0) -> None:
        """Hold every request ``delay`` s and fail ``fault_rate`` of them (0, 0: at once)."""
        self._ask(f"network {delay} {fault_rate} {seed}")

    def wait_for(self, count: int, timeout: float, stall: float = 3.0) -> Tuple[int, float]:
        """Wait until the collector holds ``count`` distinct messages, or until its count has
        not moved for ``stall`` seconds (a client that dropped events never gets there).
        Returns the count reached and the ``perf_counter`` time it was last reached."""
        started = time.perf_counter()
        seen, seen_at = -1, started
        while time.perf_counter() - started < timeout:
            now_count = self.count()
            if now_count != seen:
                seen, seen_at = now_count, time.perf_counter()
            if seen >= count or time.perf_counter() - seen_at > stall:
                break
            time.sleep(0.01)
        return seen, seen_at

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _ours(url: str, queue: str, **options: Any) -> Any:
    from durable_analytics import Client

    return Client("bench-key", endpoint=url, queue_path=queue, **options)


def _segment(url: str, **options: Any) -> Any:
    from segment.analytics import Client

    logging.getLogger("segment").setLevel(logging.CRITICAL)
    return Client("bench-key", host=url, **options)


LATENCY_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    name, url, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    props = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}
    if name == "durable":
        from durable_analytics import Client
        client = Client("bench-key", endpoint=url, queue_path=queue, **options)
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        from segment.analytics import Client
        client = Client("bench-key", host=url)
    track, clock, timings = client.track, time.perf_counter, []
    for i in range(200):  # warm up both the same way
        track("warm-%d" % i, "Order Completed", props)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] != "run":
            break
        start, count = int(command[1]), int(command[2])
        for i in range(start, start + count):
            started = clock()
            track("user-%06d" % i, "Order Completed", props)
            timings.append(clock() - started)
        print("done", flush=True)
    if name == "durable":
        client.shutdown(timeout=30)
    else:
        client.flush()
        client.shutdown()
    print(json.dumps(timings), flush=True)
    """
)


def _summary(timings: List[float]) -> Dict[str, float]:
    return {
        "median_us": round(statistics.median(timings) * 1e6, 1),
        "p99_us": round(timings[int(len(timings) * 0.99)] * 1e6, 1),
        "p999_us": round(timings[int(len(timings) * 0.999)] * 1e6, 1),
    }


Variants = Dict[str, Tuple[str, Dict[str, Any]]]
BOTH: Variants = {"durable": ("durable", {}), "segment": ("segment", {})}


def bench_latency(
    collector: RemoteCollector, calls: int, workdir: Path, variants: Variants = BOTH
) -> Dict[str, Any]:
    """1. Median and p99 per track() while each library's worker uploads.

    Each library runs in a process of its own (one library's background thread must not take
    the other's interpreter lock), and they take turns in chunks of 1,000 calls, in
    alternating order, so that all see the same moments of a shared, noisy machine.
    ``variants``: label -> (library, durable Client options).
    """
    processes = {
        label: subprocess.Popen(
            [sys.executable, "-c", LATENCY_SCRIPT, name, collector.url,
             str(workdir / f"latency-{index}.sqlite3"), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for index, (label, (name, options)) in enumerate(variants.items())
    }  # fmt: skip
    try:
        for process in processes.values():
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        chunk = 1000
        for start in range(0, calls, chunk):
            order = list(processes) if (start // chunk) % 2 == 0 else list(reversed(processes))
            for name in order:
                process = processes[name]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"run {start} {min(chunk, calls - start)}\n")
                process.stdin.flush()
                assert process.stdout.readline().strip() == "done"
        timings = {}
        for name, process in processes.items():
            out, _ = process.communicate("end\n", timeout=120)
            timings[name] = sorted(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    result: Dict[str, Any] = {name: _summary(values) for name, values in timings.items()}
    result["median_ratio"] = round(
        result["durable"]["median_us"] / result["segment"]["median_us"], 2
    )
    result["p99_ratio"] = round(result["durable"]["p99_us"] / result["segment"]["p99_us"], 2)
    return result


THREADS_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, threading, time
    name, url, queue, threads, calls = sys.argv[1:6]
    threads, calls = int(threads), int(calls)
    props = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}
    if name == "durable":
        from durable_analytics import Client
        client = Client("bench-key", endpoint=url, queue_path=queue)
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        from segment.analytics import Client
        client = Client("bench-key", host=url)
    for i in range(200):
        client.track("warm-%d" % i, "Order Completed", props)
    start = threading.Barrier(threads + 1)
    timings = [[] for _ in range(threads)]

    def record(n):
        track, clock, mine = client.track, time.perf_counter, timings[n]
        start.wait()
        for i in range(calls):
            began = clock()
            track("user-%d-%06d" % (n, i), "Order Completed", props)
            mine.append(clock() - began)

    workers = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if name == "durable":
        client.shutdown(timeout=30)
    else:
        client.flush()
        client.shutdown()
    print(json.dumps({"elapsed": elapsed, "timings": [t for ts in timings for t in ts]}))
    """
)


def bench_threads(
    collector: RemoteCollector, calls: int, workdir: Path, threads: int = 16, rounds: int = 2
) -> Dict[str, Any]:
    """2. ``threads`` threads calling track() at once: aggregate calls/s and p99 per call.

    Each library in a process of its own, in turns (``rounds`` each, alternating who goes
    first); ``calls`` is the total per process and round, split over the threads."""
    per_thread = max(1, calls // threads)
    elapsed: Dict[str, float] = {"durable": 0.0, "segment": 0.0}
    timings: Dict[str, List[float]] = {"durable": [], "segment": []}
    for round_number in range(rounds):
        order = ["durable", "segment"] if round_number % 2 == 0 else ["segment", "durable"]
        for name in order:
            done = subprocess.run(
                [sys.executable, "-c", THREADS_SCRIPT, name, collector.url,
                 str(workdir / f"threads-{round_number}.sqlite3"), str(threads),
                 str(per_thread)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                timeout=600,
            )  # fmt: skip
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            elapsed[name] += figures["elapsed"]
            timings[name].extend(figures["timings"])
    result: Dict[str, Any] = {"threads": threads, "calls": per_thread * threads * rounds}
    for name in ("durable", "segment"):
        values = sorted(timings[name])
        result[name] = {"calls_per_s": round(len(values) / elapsed[name]), **_summary(values)}
    result["calls_ratio"] = round(
        result["durable"]["calls_per_s"] / result["segment"]["calls_per_s"], 2
    )
    result["p99_ratio"] = round(result["durable"]["p99_us"] / result["segment"]["p99_us"], 2)
    return result


def bench_end_to_end(collector: RemoteCollector, events: int, workdir: Path) -> Dict[str, Any]:
    """2. From the first call until the collector has every event: events per second."""
    result: Dict[str, Any] = {}
    for name in ("durable", "segment"):
        collector.reset()
        if name == "durable":
            client = _ours(collector.url, str(workdir / "e2e.sqlite3"))
        else:
            client = _segment(collector.url)
        started = time.perf_counter()
        for i in range(events):
            client.track(f"user-{i:06d}", "Order Completed", PROPERTIES)
        delivered, done = collector.wait_for(events, timeout=600)
        elapsed = done - started
        result[name] = {
            "events_per_s": round(delivered / elapsed),
            "seconds": round(elapsed, 2),
            "delivered": delivered,
            "lost": events - delivered,
            "requests": collector.requests(),
        }
        if name == "durable":
            client.shutdown(timeout=10)
        else:
            client.shutdown()
    result["ratio"] = round(
        result["durable"]["events_per_s"] / result["segment"]["events_per_s"], 2
    )
    return result


def fill_queue(queue: Path, events: int) -> None:
    """A queue file holding ``events`` track messages, written in large transactions."""
    from durable_analytics.messages import Encoder, Track
    from durable_analytics.store import MessageStore

    store = MessageStore(queue)
    encoder = Encoder()
    batch = []
    for i in range(events):
        encoded = encoder.encode(
            Track(user_id=f"user-{i:06d}", event="Order Completed", properties=PROPERTIES)
        )
        batch.append((encoded.json, encoded.size))
        if len(batch) == 10_000:
            store.append_many(batch)
            batch = []
    if batch:
        store.append_many(batch)
    store.close()


def run_drain(queue: Path, url: str) -> Tuple[float, int]:
    """``durable-analytics drain`` of ``queue`` to ``url``: seconds taken and exit code."""
    command = [
        sys.executable, "-m", "durable_analytics", "drain", "--queue", str(queue),
        "--endpoint", url, "--write-key", "bench-key", "--json", "--timeout", "600",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return time.perf_counter() - started, done.returncode


def bench_drain(collector: RemoteCollector, events: int, workdir: Path) -> Dict[str, Any]:
    """3. A backlog uploaded by `durable-analytics drain`: events per second."""
    collector.reset()
    queue = workdir / "drain.sqlite3"
    fill_queue(queue, events)
    elapsed, code = run_drain(queue, collector.url)
    return {
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "exit_code": code,
        "delivered": collector.count(),
        "requests": collector.requests(),
    }


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, logging
    name, count, queue = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    props = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}
    # Nothing listens on port 9: every event stays queued.
    if name == "durable":
        from durable_analytics import Client
        client = Client("bench-key", endpoint="http://127.0.0.1:9", queue_path=queue,
                        max_queue_bytes=None, exit_timeout=0)
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        from segment.analytics import Client
        client = Client("bench-key", host="http://127.0.0.1:9", max_queue_size=count + 1)
        for consumer in client.consumers:  # hold everything in its queue, as ours holds it
            consumer.pause()
    for i in range(count):
        client.track("user-%06d" % i, "Order Completed", props)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    import os
    os._exit(0)
    """
)


def bench_memory(events: int, workdir: Path) -> Dict[str, Any]:
    """4. Peak RSS of a process that holds ``events`` queued events."""
    result: Dict[str, Any] = {"events": events}
    for name in ("durable", "segment"):
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, name, str(events), str(workdir / "rss.sqlite3")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        kib = int(done.stdout.strip().splitlines()[-1])
        result[name] = {"peak_rss_mb": round(kib / 1024, 1)}
    return result


IDLE_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time, logging, os
    name, seconds, queue, url = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    if name == "durable":
        from durable_analytics import Client
        client = Client("bench-key", endpoint=url, queue_path=queue, exit_timeout=0)
    else:
        logging.getLogger("segment").setLevel(logging.CRITICAL)
        from segment.analytics import Client
        client = Client("bench-key", host=url)
    client.track("u", "warm up")
    time.sleep(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(used, flush=True)
    os._exit(0)
    """
)


def bench_idle(collector: RemoteCollector, seconds: float, workdir: Path) -> Dict[str, Any]:
    """5. CPU time an idle client uses over ``seconds``."""
    result: Dict[str, Any] = {"seconds": seconds}
    for name in ("durable", "segment"):
        done = subprocess.run(
            [sys.executable, "-c", IDLE_SCRIPT, name, str(seconds),
             str(workdir / "idle.sqlite3"), collector.url],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        used = float(done.stdout.strip().splitlines()[-1])
        result[name] = {
            "cpu_seconds": round(used, 4),
            "core_percent": round(100 * used / seconds, 3),
        }
    return result


LOCAL_MODES = ["latency", "threads", "buffered", "e2e", "drain", "memory", "idle"]
BUFFERED: Variants = {
    "durable": ("durable", {"durability": "buffered"}),
    "segment": BOTH["segment"],
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, under a minute")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    from bench_network import NETWORK_MODES, run_network

    parser.add_argument(
        "--only",
        choices=[*LOCAL_MODES, *NETWORK_MODES],
        action="append",
    )
    parser.add_argument(
        "--network", action="store_true", help="the network modes (tools/bench_network.py)"
    )
    parser.add_argument("--scale", type=float, help="multiply every count (--quick: 0.1)")
    parser.add_argument("--delay", type=float, default=0.2, help="network round trip, s")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of 500s (drain)")
    parser.add_argument("--outage", type=float, default=30.0, help="outage length, s")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else 0.1 if args.quick else 1.0
    wanted = set(args.only or (NETWORK_MODES if args.network else LOCAL_MODES))
    results: Dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "sqlite": __import__("sqlite3").sqlite_version,
            "json": "orjson" if _json_text().orjson_dumps else "stdlib",
        },
        "quick": args.quick,
    }
    from durable_analytics.messages import Encoder, Track

    sample = Encoder().encode(
        Track(user_id="user-000000", event="Order Completed", properties=PROPERTIES)
    )
    results["message_bytes"] = sample.size
    collector = RemoteCollector()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if "latency" in wanted:
                results["latency"] = bench_latency(collector, int(20_000 * scale), workdir)
            if "threads" in wanted:
                results["threads"] = bench_threads(collector, int(64_000 * scale), workdir)
            if "buffered" in wanted:
                results["buffered"] = bench_latency(
                    collector, int(20_000 * scale), workdir, BUFFERED
                )
            if "e2e" in wanted:
                results["end_to_end"] = bench_end_to_end(collector, int(50_000 * scale), workdir)
            if "drain" in wanted:
                results["drain"] = bench_drain(collector, int(100_000 * scale), workdir)
            if "memory" in wanted:
                results["memory"] = bench_memory(int(1_000_000 * scale), workdir)
            if "idle" in wanted:
                results["idle"] = bench_idle(collector, 10.0 * (0.5 if args.quick else 1), workdir)
            network = [mode for mode in NETWORK_MODES if mode in wanted]
            results.update(
                run_network(
                    collector, network, workdir, scale, args.delay, args.fault_rate, args.outage
                )
            )
    finally:
        collector.close()
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _json_text() -> Any:
    from durable_analytics import json_text

    return json_text


def _print_table(results: Dict[str, Any]) -> None:
    rows = []
    if "latency" in results:
        r = results["latency"]
        rows.append(
            (
                "track() median µs",
                r["durable"]["median_us"],
                r["segment"]["median_us"],
                r["median_ratio"],
            )
        )
        rows.append(("track() p99 µs", r["durable"]["p99_us"], r["segment"]["p99_us"], None))
    if "threads" in results:
        r = results["threads"]
        for label, key, ratio in (
            ("calls/s", "calls_per_s", "calls_ratio"),
            ("p99 µs", "p99_us", "p99_ratio"),
        ):
            rows.append(
                (f"{r['threads']} threads {label}", r["durable"][key], r["segment"][key], r[ratio])
            )
    if "buffered" in results:
        r = results["buffered"]
        rows.append(
            (
                "buffered track() median µs",
                r["durable"]["median_us"],
                r["segment"]["median_us"],
                r["median_ratio"],
            )
        )
    if "end_to_end" in results:
        r = results["end_to_end"]
        rows.append(
            (
                "end to end events/s",
                r["durable"]["events_per_s"],
                r["segment"]["events_per_s"],
                r["ratio"],
            )
        )
        rows.append(("end to end events lost", r["durable"]["lost"], r["segment"]["lost"], None))
    if "drain" in results:
        r = results["drain"]
        rows.append(("drain events/s", r["events_per_s"], None, None))
    if "memory" in results:
        r = results["memory"]
        rows.append(
            (
                f"peak RSS MB, {r['events']:,} queued",
                r["durable"]["peak_rss_mb"],
                r["segment"]["peak_rss_mb"],
                None,
            )
        )
    if "idle" in results:
        r = results["idle"]
        rows.append(
            (
                "idle CPU % of a core",
                r["durable"]["core_percent"],
                r["segment"]["core_percent"],
                None,
            )
        )
    print(
        f"message: {results['message_bytes']} bytes of JSON; "
        f"python {results['machine']['python']}, "
        f"{results['machine']['cores']} cores, sqlite {results['machine']['sqlite']}, "
        f"json {results['machine']['json']}"
    )
    from bench_network import network_rows

    rows += network_rows(results)
    print(f"{'measure':<40}{'durable':>14}{'segment':>14}{'ratio':>8}")
    for name, ours, theirs, ratio in rows:
        print(f"{name:<40}{_cell(ours):>14}{_cell(theirs):>14}{_cell(ratio):>8}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, (int, float)) else str(value)


if __name__ == "__main__":
    sys.exit(main())
