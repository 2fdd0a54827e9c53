"""Time ``track()`` calls in one process, with the worker uploading or not, and optionally time
each of the queue's write transactions, to see which of them the slow calls overlap.

    python tools/profile_calls.py                  # 20,000 calls, worker uploading
    python tools/profile_calls.py --no-send        # the call alone (send=False)
    python tools/profile_calls.py --transactions   # also: lease/ack times, slow calls' overlaps
    python tools/profile_calls.py --threads 16 --calls 1000 [--ungrouped]
                                                   # 16 threads; --ungrouped: each call commits
                                                   # alone (no group commit), to compare
    python tools/profile_calls.py --handoff        # what one hand-off between two threads
                                                   # costs on this machine (time and CPU)
    python tools/profile_calls.py --worker-elsewhere
                                                   # the calls in this process, the delivery in
                                                   # another one on the same file: what the
                                                   # worker's share of the interpreter costs

Every run also prints the process's CPU time and voluntary context switches per call: under
many threads these, not the queue, bound the calls (docs/performance.md).

The collector runs in a process of its own, as in ``tools/bench.py``. This is a diagnostic:
the side-by-side comparison with segment-analytics-python is ``tools/bench.py``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import PROPERTIES, RemoteCollector  # noqa: E402

from durable_analytics import Client  # noqa: E402
from durable_analytics.lifecycle import CLIENTS  # noqa: E402
from durable_analytics.store import MessageStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--no-send", action="store_true", help="send=False: no worker")
    parser.add_argument("--transactions", action="store_true", help="time each write")
    parser.add_argument("--threads", type=int, default=1, help="threads, --calls each")
    parser.add_argument("--ungrouped", action="store_true", help="no group commit")
    parser.add_argument("--handoff", action="store_true", help="time a thread hand-off")
    parser.add_argument(
        "--worker-elsewhere", action="store_true", help="deliver from another process"
    )
    args = parser.parse_args()
    if args.handoff:
        return _handoff(args.calls)

    spans: List[Tuple[float, float, str]] = []
    if args.transactions:
        write = MessageStore._write

        def timed(self: MessageStore, work: Any) -> Any:
            started = time.perf_counter()
            try:
                return write(self, work)
            finally:
                name = work.__qualname__.split(".")[-3] if "." in work.__qualname__ else "?"
                spans.append((started, time.perf_counter() - started, name))

        MessageStore._write = timed  # type: ignore[method-assign]

    if args.worker_elsewhere:
        Client._ensure_worker = lambda self: _NO_WORKER  # type: ignore[method-assign]
    collector = RemoteCollector()
    calls: List[Tuple[float, float]] = []
    deliverer = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            queue = str(Path(tmp) / "calls.sqlite3")
            client = Client("bench-key", endpoint=collector.url, queue_path=queue,
                            send=not args.no_send)  # fmt: skip
            if args.worker_elsewhere:
                deliverer = subprocess.Popen(
                    [sys.executable, "-c", _DELIVERER, collector.url, queue],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert deliverer.stdout is not None and deliverer.stdout.readline() == "ready\n"
            if args.ungrouped and client.store is not None:
                client._committer = _Ungrouped(client.store)
            for i in range(200):
                client.track(f"warm-{i}", "Order Completed", PROPERTIES)
            before = resource.getrusage(resource.RUSAGE_SELF)
            elapsed = _record(client, args.calls, args.threads, calls)
            cpu, switches = _per_call(before, len(calls))
            if args.worker_elsewhere:  # no worker here to shut down: just let go of the file
                CLIENTS.discard(client)
                client.store.close()
            else:
                client.shutdown(timeout=30)
    finally:
        if deliverer is not None:
            deliverer.kill()
            deliverer.wait()
        collector.close()

    timings = sorted(duration for _, duration in calls)
    print(
        f"{'no send' if args.no_send else 'worker uploading'}"
        f"{' in another process' if args.worker_elsewhere else ''}: {len(timings):,} calls, "
        f"{args.threads} thread(s){', ungrouped' if args.ungrouped else ''}, "
        f"{len(timings) / elapsed:,.0f} calls/s, "
        f"median {statistics.median(timings) * 1e6:.1f} µs, "
        f"mean {statistics.fmean(timings) * 1e6:.1f} µs, "
        f"p99 {timings[int(len(timings) * 0.99)] * 1e6:.1f} µs, "
        f"p99.9 {timings[int(len(timings) * 0.999)] * 1e6:.1f} µs; per call (all threads of "
        f"the process): {cpu:.1f} µs of CPU, {switches:.2f} voluntary context switches"
    )
    if spans:
        by_name: Dict[str, List[float]] = defaultdict(list)
        for _, duration, name in spans:
            by_name[name].append(duration)
        for name, values in sorted(by_name.items()):
            values.sort()
            print(
                f"  {name:<8} {len(values):>5} transactions, median "
                f"{values[len(values) // 2] * 1e6:.0f} µs, p90 "
                f"{values[int(len(values) * 0.9)] * 1e6:.0f} µs"
            )
        slow = [(s, d) for s, d in calls if d > 1e-3]
        overlapping = sum(1 for s, d in slow if any(t < s + d and t + u > s for t, u, _ in spans))
        print(f"  calls over 1 ms: {len(slow)}, of which {overlapping} overlap a transaction")
    return 0


class _NoWorker:
    """What a client without its own worker is told after each append: nothing to do."""

    def notify_append(self, count: int = 1) -> None:
        pass


_NO_WORKER = _NoWorker()

# Delivers from the queue file at argv[2] to the collector at argv[1] until killed; it looks
# for the other process's appends every 50 ms (no append of its own wakes it).
_DELIVERER = """
import sys, time
from durable_analytics import Client
client = Client("bench-key", endpoint=sys.argv[1], queue_path=sys.argv[2], flush_interval=0.05)
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def _per_call(before: Any, calls: int) -> Tuple[float, float]:
    """CPU µs and voluntary context switches of the whole process since ``before``, per call."""
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu / calls * 1e6, (after.ru_nvcsw - before.ru_nvcsw) / calls


def _handoff(rounds: int) -> int:
    """Two threads passing a token back and forth through two locks: each pass puts one
    thread to sleep and wakes the other, as a follower of a group commit is put to sleep and
    woken. Prints the time and CPU per hand-off (half a round trip)."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def other() -> None:
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=other)
    thread.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for _ in range(rounds):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - started
    thread.join()
    cpu, switches = _per_call(before, 2 * rounds)
    print(
        f"thread hand-off: {elapsed / (2 * rounds) * 1e6:.1f} µs, {cpu:.1f} µs of CPU, "
        f"{switches:.2f} voluntary context switches ({rounds:,} round trips)"
    )
    return 0


class _Ungrouped:
    """Each call commits its own message, as before group commit."""

    def __init__(self, store: MessageStore) -> None:
        self.commit = store.append


def _record(client: Client, count: int, threads: int, calls: List[Tuple[float, float]]) -> float:
    """``count`` calls in each of ``threads`` threads started together; the seconds from the
    start to the last return."""
    start = threading.Barrier(threads + 1)

    def record(thread: int) -> None:
        clock, mine = time.perf_counter, []
        start.wait()
        for i in range(count):
            started = clock()
            client.track(f"user-{thread}-{i:06d}", "Order Completed", PROPERTIES)
            mine.append((started, clock() - started))
        calls.extend(mine)

    workers = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
