"""Measure the durable queue against persist-queue's stock ack queue, side by side in one run.

    python tools/bench_queue.py [--quick] [--json out.json] [--dir DIR]

1. appends per second: ``SQLiteAckQueue.put`` with its defaults (pickle, synchronous FULL)
   against ``MessageStore.append`` with durability "normal" and "full", one 300-byte JSON
   message per call, each committed before the call returns;
2. messages per second through lease + ack in batches of 100, against persist-queue's
   ``get`` + ``ack`` per row (and this store's persist-queue-style ``get`` + ``ack``);
3. the time of one lease of 100 on a 1,000,000-row backlog (median of several), next to the
   same on a small backlog;
4. the ratios.

Every figure comes from real files in a temporary directory; absolute numbers depend on the
disk and the machine, the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from persistqueue.sqlackqueue import SQLiteAckQueue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from durable_analytics.store import AckQueue, MessageStore  # noqa: E402


def make_message(size: int = 300) -> str:
    """A track call's JSON of exactly ``size`` bytes."""
    base = {
        "type": "track",
        "event": "Order Completed",
        "userId": "user-0042",
        "messageId": "5f3c1f8e-8d3a-4c4e-9a59-0c6b4f1d2e3a",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"total": 42.5, "currency": "EUR", "note": ""},
    }
    pad = size - len(json.dumps(base, separators=(",", ":")))
    base["properties"]["note"] = "x" * pad
    text = json.dumps(base, separators=(",", ":"))
    assert len(text.encode()) == size
    return text


MESSAGE = make_message()
SIZE = len(MESSAGE.encode())


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(work: Callable[[], int]) -> float:
    """Run ``work`` (which returns how many messages it handled); messages per second."""
    start = time.perf_counter()
    done = work()
    return rate(done, time.perf_counter() - start)


def median_rate(runs: int, one_run: Callable[[int], float]) -> float:
    """The median of ``runs`` measurements, each on fresh files: the machine may be shared."""
    return statistics.median(one_run(n) for n in range(runs))


def stock_queue(directory: Path) -> SQLiteAckQueue:
    """persist-queue's ack queue exactly as it ships (pickle, synchronous FULL)."""
    return SQLiteAckQueue(str(directory), auto_resume=False)


def bench_appends(root: Path, count: int, runs: int) -> Dict[str, float]:
    results: Dict[str, float] = {}

    def put(run: int) -> float:
        queue = stock_queue(root / f"pq-put-{run}")

        def work() -> int:
            for _ in range(count):
                queue.put(MESSAGE)
            return count

        try:
            return timed(work)
        finally:
            queue.close()

    results["persist-queue put (pickle, FULL)"] = median_rate(runs, put)

    for durability in ("normal", "full"):

        def append(run: int, durability: str = durability) -> float:
            store = MessageStore(root / f"append-{durability}-{run}.sqlite3", durability=durability)

            def work() -> int:
                for _ in range(count):
                    store.append(MESSAGE, SIZE)
                return count

            try:
                return timed(work)
            finally:
                store.close()

        results[f"MessageStore.append ({durability})"] = median_rate(runs, append)

    def append_many(run: int) -> float:
        store = MessageStore(root / f"append-many-{run}.sqlite3", max_queue_bytes=None)

        def work() -> int:
            for _ in range(count // 100):
                store.append_many([(MESSAGE, SIZE)] * 100)
            return count // 100 * 100

        try:
            return timed(work)
        finally:
            store.close()

    results["MessageStore.append_many (100 per call, normal)"] = median_rate(runs, append_many)
    return results


def bench_take(root: Path, count: int, runs: int) -> Dict[str, float]:
    results: Dict[str, float] = {}

    def get_ack(run: int) -> float:
        queue = stock_queue(root / f"pq-take-{run}")
        for _ in range(count):
            queue.put(MESSAGE)

        def work() -> int:
            done = 0
            while queue.qsize():
                item = queue.get(block=False, raw=True)
                queue.ack(id=item["pqid"])
                done += 1
            return done

        try:
            return timed(work)
        finally:
            queue.close()

    results["persist-queue get+ack per row"] = median_rate(runs, get_ack)

    def pq_style(run: int) -> float:
        store = MessageStore(root / f"take-pq-style-{run}.sqlite3", max_queue_bytes=None)
        queue = AckQueue(store=store)
        for _ in range(count):
            queue.put(MESSAGE)

        def work() -> int:
            done = 0
            while not queue.empty():
                queue.ack(queue.get(block=False, raw=True))
                done += 1
            return done

        try:
            return timed(work)
        finally:
            store.close()

    results["AckQueue get+ack per row"] = median_rate(runs, pq_style)

    def lease_ack(run: int) -> float:
        store = MessageStore(root / f"take-batch-{run}.sqlite3", max_queue_bytes=None)
        store.append_many([(MESSAGE, SIZE)] * count)
        owner = store.new_owner()

        def work() -> int:
            done = 0
            while True:
                lease = store.lease(owner, max_messages=100, max_bytes=500_000, lease_seconds=30)
                if lease is None:
                    return done
                store.ack(lease.ids)
                done += len(lease.rows)

        try:
            return timed(work)
        finally:
            store.close()

    results["MessageStore lease(100)+ack"] = median_rate(runs, lease_ack)
    return results


def lease_times_ms(store: MessageStore, repeats: int) -> List[float]:
    owner = store.new_owner()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lease = store.lease(owner, max_messages=100, max_bytes=500_000, lease_seconds=30)
        times.append((time.perf_counter() - start) * 1000)
        assert lease is not None and len(lease.rows) == 100
        store.ack(lease.ids)
    return times


def bench_backlog(root: Path, rows: int, repeats: int) -> Dict[str, Any]:
    small = MessageStore(root / "backlog-small.sqlite3", max_queue_bytes=None)
    small.append_many([(MESSAGE, SIZE)] * (100 * repeats + 1000))
    small_ms = statistics.median(lease_times_ms(small, repeats))
    small.close()

    store = MessageStore(root / "backlog.sqlite3", max_queue_bytes=None)
    chunk = [(MESSAGE, SIZE)] * 50_000
    start = time.perf_counter()
    left = rows
    while left > 0:
        store.append_many(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    build = time.perf_counter() - start
    store.checkpoint()
    backlog_ms = statistics.median(lease_times_ms(store, repeats))
    file_mb = store.stats().file_bytes / 1e6
    store.close()
    return {
        "rows": rows,
        "build_rows_per_s": rate(rows, build),
        "file_mb": file_mb,
        "lease_ms_median_big": backlog_ms,
        "lease_ms_median_small": small_ms,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--dir", type=Path, help="where to put the queue files (default: tmp)")
    options = parser.parse_args(argv)

    appends, takes, backlog, repeats, runs = (
        (300, 1_000, 20_000, 5, 1) if options.quick else (10_000, 5_000, 1_000_000, 21, 3)
    )
    with tempfile.TemporaryDirectory(dir=options.dir, prefix="bench-queue-") as name:
        root = Path(name)
        append_rates = bench_appends(root, appends, runs)
        take_rates = bench_take(root, takes, runs)
        lease = bench_backlog(root, backlog, repeats)

    put = append_rates["persist-queue put (pickle, FULL)"]
    get_ack = take_rates["persist-queue get+ack per row"]
    ratios = {
        "append normal / pq put": append_rates["MessageStore.append (normal)"] / put,
        "append full / pq put": append_rates["MessageStore.append (full)"] / put,
        "append normal / append full": append_rates["MessageStore.append (normal)"]
        / append_rates["MessageStore.append (full)"],
        "lease(100)+ack / pq get+ack": take_rates["MessageStore lease(100)+ack"] / get_ack,
        "lease ms big / small backlog": lease["lease_ms_median_big"]
        / lease["lease_ms_median_small"],
    }

    print(
        f"durable queue benchmark: Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, message {SIZE} bytes{' (quick)' if options.quick else ''}"
    )
    each = f"median of {runs} runs, " if runs > 1 else ""
    print(f"\n1. appends, one commit per call ({each}{appends:,} calls each)")
    for label, value in append_rates.items():
        print(f"   {label:<50} {value:>12,.0f} /s")
    print(f"\n2. taking and acknowledging ({each}{takes:,} messages each)")
    for label, value in take_rates.items():
        print(f"   {label:<50} {value:>12,.0f} /s")
    print(f"\n3. one lease of 100 (median of {repeats})")
    big = f"on {lease['rows']:,} rows ({lease['file_mb']:,.0f} MB file)"
    small = f"on {100 * repeats + 1000:,} rows"
    print(f"   {big:<50} {lease['lease_ms_median_big']:>12.3f} ms")
    print(f"   {small:<50} {lease['lease_ms_median_small']:>12.3f} ms")
    print(f"   {'(backlog built with append_many at)':<50} {lease['build_rows_per_s']:>12,.0f} /s")
    print("\n4. ratios")
    for label, value in ratios.items():
        print(f"   {label:<50} {value:>12.1f}x")

    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "quick": options.quick,
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                    "message_bytes": SIZE,
                    "counts": {"appends": appends, "take": takes, "runs": runs},
                    "appends_per_s": append_rates,
                    "take_per_s": take_rates,
                    "lease": lease,
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
