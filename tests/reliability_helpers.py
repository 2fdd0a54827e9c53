"""Shared parts of the reliability suites and of ``tools/soak.py``.

The module is both a library (campaigns that the tests run small and the soak runs large) and
the script that child processes run (``python tests/reliability_helpers.py produce ...``), so
the producer a test kills is exactly the one the soak kills. Campaigns use real processes, a
real :class:`~durable_analytics.testing.Collector` over HTTP on 127.0.0.1 and real queue files;
every random choice comes from a seed that the report carries.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve()
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from durable_analytics import Client, RetryPolicy  # noqa: E402
from durable_analytics.store import MessageStore  # noqa: E402
from durable_analytics.testing import Collector, Response  # noqa: E402
from durable_analytics.transport import Transport  # noqa: E402
from durable_analytics.worker import DEFAULT_MAX_IN_FLIGHT, Worker  # noqa: E402

WRITE_KEY = "reliability-key"
CHILD_RETRY = RetryPolicy(initial=0.01, maximum=0.1, retry_after_max=1.0)
# No jitter, so the number of attempts an outage allows can be computed exactly.
OUTAGE_RETRY = RetryPolicy(initial=0.05, maximum=0.2, jitter=False, retry_after_max=0.5)
READY, APPENDED, FLUSHED = "#ready", "#appended", "#flushed"
PROCESS_TIMEOUT = 60.0


def suite_seed(default: int = 20260601) -> int:
    """The seed of a test run: ``RELIABILITY_SEED`` from the environment, or a fixed default,
    so a failure can be replayed exactly (timing aside) with the seed it printed."""
    seed = int(os.environ.get("RELIABILITY_SEED", default))
    print(f"reliability seed: {seed} (replay with RELIABILITY_SEED={seed})")
    return seed


def child_environment() -> Dict[str, str]:
    """The environment for a child Python: this checkout first on the path, no debug noise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DEBUG", None)
    return env


def helper_command(command: str, *args: Any) -> List[str]:
    """argv that runs one of this module's child commands with this interpreter."""
    return [sys.executable, str(HELPERS), command, *map(str, args)]


def read_ids(path: Path) -> Tuple[List[str], Set[str]]:
    """Ids a producer wrote (each only after its call returned) and the markers it reached.

    A line is counted only when complete: a kill can never leave half an id behind, but the
    reader does not rely on that.
    """
    if not path.exists():
        return [], set()
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
    ids = [line for line in lines if line and not line.startswith("#")]
    return ids, {line for line in lines if line.startswith("#")}


def wait_for_marker(path: Path, marker: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until a child wrote ``marker``; raise with its stderr if it died or took too long."""
    deadline = time.monotonic() + timeout
    while marker not in read_ids(path)[1]:
        if process.poll() is not None:
            raise RuntimeError(
                f"child exited {process.returncode} before {marker}: {_err(process)}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"child did not reach {marker} within {timeout}s: {_err(process)}")
        time.sleep(0.005)


def _err(process: subprocess.Popen) -> str:
    try:
        _, err = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "(no stderr: still running)"
    return (err or b"").decode(errors="replace")[-2000:]


def queue_rows(path: Path) -> List[Tuple[int, str, int]]:
    """(id, data, attempts) of every row still in a queue file, read with plain sqlite3."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT id, data, attempts FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


def drain_library(queue: Path, endpoint: str, timeout: float = 30.0) -> bool:
    """Restart-and-drain with the library: one more Worker on the file, in this thread."""
    store = MessageStore(queue)
    transport = Transport(WRITE_KEY, endpoint, timeout=5.0)
    try:
        worker = Worker(
            store,
            transport,
            policy=CHILD_RETRY,
            flush_at=1,
            flush_interval=0.05,
            max_batch_messages=100,
        )
        return worker.deliver_until(store.last_id(), timeout)
    finally:
        transport.close()
        store.close()


def cli_available() -> bool:
    try:
        from durable_analytics import cli  # noqa: F401
    except ImportError:
        return False
    return True


def drain_cli(queue: Path, endpoint: str, timeout: float = 30.0) -> Dict[str, Any]:
    """Restart-and-drain with ``python -m durable_analytics drain``; its exit code and JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "durable_analytics", "drain", "--queue", str(queue)]
        + ["--endpoint", endpoint, "--write-key", WRITE_KEY, "--json", "--timeout", str(timeout)],
        env=child_environment(),
        capture_output=True,
        timeout=timeout + PROCESS_TIMEOUT,
    )
    summary: Dict[str, Any] = {}
    if result.stdout.strip():
        summary = json.loads(result.stdout.decode().strip().splitlines()[-1])
    summary["exit_code"] = result.returncode
    summary["stderr"] = result.stderr.decode(errors="replace")[-2000:]
    return summary


COLLECTOR_LAG = 0.5  # seconds a killed sender's last request may take to be read and stamped


def wasted_deliveries(collector: Collector) -> List[Tuple[Any, List[str], Set[str]]]:
    """Accepted requests whose messages the server received again later.

    Each is a batch the server accepted but the sender never acknowledged (it died first);
    returns (request, its messageIds, the ones sent again). The redeliveries they account
    for add up to ``collector.duplicates``.
    """
    accepted = [r for r in collector.requests if r.status == 200 and r.payload is not None]
    later: Set[str] = set()
    found = []
    for request in reversed(accepted):
        mids = [m.get("messageId") for m in request.payload["batch"]]
        again = {mid for mid in mids if mid in later}
        if again:
            found.append((request, mids, again))
        later.update(mids)
    return found[::-1]


# ------------------------------------------------------------------------------------------------
# Crash: producers killed with SIGKILL at random moments, restarted on the same file, drained


@dataclass
class Run:
    """One producer process of a crash lane."""

    lane: int
    number: int
    prefix: str
    planned: int
    started: float
    killed_at: float
    returned: List[str]
    markers: Set[str]
    exit_code: Optional[int]

    @property
    def killed_during_appends(self) -> bool:
        return APPENDED not in self.markers


@dataclass
class CrashReport:
    seed: int
    kills: int
    lanes: int
    max_batch_messages: int
    runs: List[Run]
    returned: Set[str]
    delivered: Set[str]
    lost: List[str]
    unexpected: List[str]
    duplicates: int
    wasted_batches: List[Dict[str, Any]]
    unattributed: List[Dict[str, Any]]
    kills_during_appends: int
    kills_with_redelivery: int
    leftovers: Dict[str, Any]
    drains: List[Dict[str, Any]]
    collector_errors: List[str]
    elapsed: float

    def as_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.seed,
            "kills": self.kills,
            "lanes": self.lanes,
            "events_recorded": len(self.returned),
            "events_delivered": len(self.delivered),
            "delivered_cut_short": len(self.delivered - self.returned),
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "batches_redelivered": len(self.wasted_batches),
            "read_after_the_successor_started": sum(
                1 for entry in self.wasted_batches if entry.get("read_after_the_successor_started")
            ),
            "kills_during_appends": self.kills_during_appends,
            "kills_with_redelivery": self.kills_with_redelivery,
            "unattributed_redeliveries": len(self.unattributed),
            "max_batch_messages": self.max_batch_messages,
            "left_in_queues": self.leftovers,
            "drains": self.drains,
            "elapsed_seconds": round(self.elapsed, 2),
        }


def _redelivery_window(seed: int, probability: float, delay: float) -> Callable[[Any], None]:
    """An ``on_message`` hook: the collector has recorded the batch but not answered yet.

    Sleeping here widens the window in which a kill leaves a batch accepted by the server and
    still leased (not acknowledged) in the file: the case that produces redeliveries.
    """
    rng = random.Random(seed)

    def hook(message: Any) -> None:
        if rng.random() < probability:
            time.sleep(delay)

    return hook


def crash_campaign(
    workdir: Path,
    *,
    seed: int,
    kills: int,
    lanes: int = 2,
    events: Tuple[int, int] = (100, 300),
    pause: float = 0.003,
    flush_at: int = 10,
    max_batch_messages: int = 20,
    window_probability: float = 0.03,
    window_delay: float = 0.05,
    cli_drain_lanes: Sequence[int] = (),
    log: Callable[[str], None] = lambda line: None,
) -> CrashReport:
    """``kills`` producer runs, spread over ``lanes`` queue files, each killed at random.

    Each run records events with message ids ``L{lane}r{run}-{n}`` and writes an id to its
    file only after the call returned, while its worker uploads (``flush_at`` small). It is
    SIGKILLed at a random moment — during appends, during uploads, or while the collector holds
    an accepted batch unanswered. The next run restarts on the same file (its worker delivers
    the leftovers); after the last, each lane is drained by the library (or the CLI).
    """
    started = time.monotonic()
    collector = Collector(
        WRITE_KEY, on_message=_redelivery_window(seed, window_probability, window_delay)
    )
    collector.start()
    per_lane = [kills // lanes + (1 if lane < kills % lanes else 0) for lane in range(lanes)]
    runs: List[Run] = []
    failures: List[BaseException] = []
    lock = threading.Lock()

    def lane_loop(lane: int) -> None:
        rng = random.Random(f"{seed}-{lane}")
        queue = workdir / f"lane{lane}" / "events.sqlite3"
        seconds_per_event = pause / 2 + 0.0005  # a first guess, then measured
        for number in range(per_lane[lane]):
            planned = rng.randint(*events)
            prefix = f"L{lane}r{number}"
            ids_file = workdir / f"lane{lane}" / f"run{number}.ids"
            ids_file.parent.mkdir(parents=True, exist_ok=True)
            begin = time.monotonic()
            process = subprocess.Popen(
                helper_command(
                    "produce",
                    "--queue",
                    queue,
                    "--endpoint",
                    collector.url,
                    "--ids",
                    ids_file,
                    "--prefix",
                    prefix,
                    "--count",
                    planned,
                    "--pause",
                    pause,
                    "--flush-at",
                    flush_at,
                    "--max-batch",
                    max_batch_messages,
                    "--seed",
                    rng.randrange(1 << 30),
                    "--hold",
                ),
                env=child_environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            wait_for_marker(ids_file, READY, process, PROCESS_TIMEOUT)
            ready_at = time.monotonic()
            # Kill anywhere from the first append to well past the last, going by the append
            # rate measured on earlier runs (it depends on how busy the machine is).
            time.sleep(rng.uniform(0.0, 1.5 * planned * seconds_per_event))
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            code = process.wait(timeout=PROCESS_TIMEOUT)
            if process.stderr is not None:
                process.stderr.close()
            returned, markers = read_ids(ids_file)
            if returned and APPENDED not in markers:
                measured = (killed_at - ready_at) / len(returned)
                seconds_per_event = (seconds_per_event + measured) / 2
            run = Run(lane, number, prefix, planned, begin, killed_at, returned, markers, code)
            with lock:
                runs.append(run)
            log(
                f"lane {lane} run {number}: {len(returned)}/{planned} recorded, "
                f"killed {'during appends' if run.killed_during_appends else 'after appends'}"
            )

    def guarded(lane: int) -> None:
        try:
            lane_loop(lane)
        except BaseException as exc:  # reported by the caller, with the lane's traceback
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(lane,)) for lane in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        collector.stop()
        raise failures[0]

    drains: List[Dict[str, Any]] = []
    leftovers: Dict[str, Any] = {}
    for lane in range(lanes):
        queue = workdir / f"lane{lane}" / "events.sqlite3"
        if lane in cli_drain_lanes and cli_available():
            summary = drain_cli(queue, collector.url)
            drains.append({"lane": lane, "by": "cli", **summary})
        else:
            drains.append(
                {"lane": lane, "by": "library", "emptied": drain_library(queue, collector.url)}
            )
        store = MessageStore(queue)
        stats = store.stats()
        store.close()
        leftovers[f"lane{lane}"] = {
            "ready": stats.ready,
            "leased": stats.leased,
            "dead": stats.dead,
        }
    collector.stop()
    return _crash_report(
        seed, kills, lanes, max_batch_messages, runs, collector, drains, leftovers, started
    )


def _crash_report(
    seed: int,
    kills: int,
    lanes: int,
    max_batch_messages: int,
    runs: List[Run],
    collector: Collector,
    drains: List[Dict[str, Any]],
    leftovers: Dict[str, Any],
    started: float,
) -> CrashReport:
    returned = {mid for run in runs for mid in run.returned}
    delivered = collector.message_ids
    lost = sorted(returned - delivered)

    # A delivered id whose call had not returned must be the one call cut short by the kill.
    unexpected = []
    for run in runs:
        mine = {mid for mid in delivered if mid.startswith(run.prefix + "-")}
        allowed = set(run.returned) | {f"{run.prefix}-{len(run.returned)}"}
        unexpected += sorted(mine - allowed)

    # Every redelivery must come from a batch the server accepted while its producer was being
    # killed: a "wasted" delivery is one whose messages the server receives again later, and
    # each killed run may account for at most the batches it keeps on the wire at once. (A
    # batch redelivered by a run that is killed in the same window again is wasted twice, once
    # per kill.) The collector stamps a request when it has read it, which on a busy machine
    # can be a little after the killed sender's successor started: such a request is put on the
    # previous run, if that run's kill was at most COLLECTOR_LAG before and it has no batch of
    # its own yet.
    by_lane: Dict[int, List[Run]] = {}
    for run in sorted(runs, key=lambda r: r.started):
        by_lane.setdefault(run.lane, []).append(run)
    wasted: List[Dict[str, Any]] = []
    unattributed: List[Dict[str, Any]] = []
    blamed: Dict[Tuple[int, int], int] = {}
    for request, batch_ids, mids in wasted_deliveries(collector):
        lane = int(batch_ids[0].split("r", 1)[0][1:])
        candidates = [r for r in by_lane[lane] if r.started <= request.received_at]
        entry = {
            "lane": lane,
            "batch_size": len(batch_ids),
            "redelivered": len(mids),
            "whole_batch": set(batch_ids) == mids,
            "received_at": request.received_at,
        }
        if not candidates:
            unattributed.append(entry)
            continue
        run = candidates[-1]
        if len(candidates) > 1:
            previous = candidates[-2]
            if (
                lane,
                previous.number,
            ) not in blamed and request.received_at - previous.killed_at <= COLLECTOR_LAG:
                run = previous
                entry["read_after_the_successor_started"] = True
        entry["run"] = run.number
        entry["seconds_after_start"] = round(request.received_at - run.started, 4)
        entry["seconds_before_kill"] = round(run.killed_at - request.received_at, 4)
        key = (lane, run.number)
        blamed[key] = blamed.get(key, 0) + 1
        (unattributed if blamed[key] > DEFAULT_MAX_IN_FLIGHT else wasted).append(entry)
    return CrashReport(
        seed=seed,
        kills=len(runs),
        lanes=lanes,
        max_batch_messages=max_batch_messages,
        runs=sorted(runs, key=lambda r: (r.lane, r.number)),
        returned=returned,
        delivered=delivered,
        lost=lost,
        unexpected=unexpected,
        duplicates=collector.duplicates,
        wasted_batches=wasted,
        unattributed=unattributed,
        kills_during_appends=sum(run.killed_during_appends for run in runs),
        kills_with_redelivery=len(blamed),
        leftovers=leftovers,
        drains=drains,
        collector_errors=collector.errors,
        elapsed=time.monotonic() - started,
    )


# ------------------------------------------------------------------------------------------------
# Outage: refused connections, then 503, then 429 with Retry-After, then recovery


def attempts_allowed(policy: RetryPolicy, window: float) -> int:
    """The most attempts that fit in ``window`` seconds when each failure waits its backoff.

    With ``jitter=False`` the k-th failure in a row waits ``min(initial * 2**(k-1), maximum)``
    (a ``Retry-After`` at least ``maximum`` only waits longer), so attempt n+1 comes no sooner
    than the sum of the first n waits after the first: ``log2(maximum / initial)`` growing
    steps, then one attempt per ``maximum``.
    """
    assert not policy.jitter, "the bound needs a policy without jitter"
    attempts, elapsed = 1, 0.0
    while True:
        wait = min(policy.initial * 2 ** (attempts - 1), policy.maximum)
        if elapsed + wait > window:
            return attempts
        elapsed += wait
        attempts += 1


@dataclass
class OutageReport:
    seed: int
    phases: Dict[str, float]
    outage_seconds: float
    recorded: List[str]
    delivered: Set[str]
    lost: List[str]
    duplicates: int
    failed_attempts: int
    attempts_allowed: int
    statuses: Dict[str, int]
    retry_after: float
    retry_after_gaps: List[float]
    capped_retry_after: Optional[Dict[str, float]]
    flushed: bool
    leftovers: Dict[str, int]
    collector_errors: List[str]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.seed,
            "phases_seconds": self.phases,
            "outage_seconds": round(self.outage_seconds, 3),
            "events_recorded": len(self.recorded),
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "requests_during_outage": self.failed_attempts,
            "requests_allowed_by_backoff": self.attempts_allowed,
            "statuses": self.statuses,
            "retry_after_seconds": self.retry_after,
            "min_gap_after_429": round(min(self.retry_after_gaps), 3)
            if self.retry_after_gaps
            else None,
            "capped_retry_after": self.capped_retry_after,
            "left_in_queue": self.leftovers,
        }


def outage_campaign(
    workdir: Path,
    *,
    seed: int,
    refused: float = 0.6,
    unavailable: float = 0.5,
    limited: float = 0.7,
    retry_after: float = 0.3,
    events_per_phase: int = 15,
    policy: RetryPolicy = OUTAGE_RETRY,
    flush_timeout: float = 20.0,
) -> OutageReport:
    """One client through an outage: refused, 503, 429 + Retry-After, one over-long
    Retry-After (capped by ``retry_after_max``), then a healthy server.

    Events are recorded in every phase (calls never wait for the server). Returns what the
    worker attempted while the server was down and what arrived afterwards.
    """
    rng = random.Random(seed)
    collector = Collector(WRITE_KEY).start()
    queue = workdir / "outage" / "events.sqlite3"
    client = Client(
        WRITE_KEY,
        endpoint=collector.url,
        queue_path=queue,
        flush_at=5,
        flush_interval=0.05,
        max_batch_messages=10_000,
        retry_policy=policy,
        flush_timeout=flush_timeout,
        exit_timeout=0.0,
    )
    recorded: List[str] = []

    def record(phase: str) -> None:
        for n in range(events_per_phase):
            recorded.append(
                client.track(
                    f"user-{rng.randrange(100)}", "Outage Event", {"phase": phase, "n": n}
                ).message_id
            )
            time.sleep(rng.uniform(0, 0.004))

    try:
        record("before")
        assert client.flush(), "the collector did not take the first events"
        before_requests = len(collector.requests)
        collector.refuse()
        outage_start = time.monotonic()
        record("refused")
        phase_end = _phase(client, outage_start, refused)
        collector.set_default(Response(503))
        collector.resume()
        record("unavailable")
        phase_end = _phase(client, phase_end, unavailable)
        collector.set_default(Response(429, retry_after=f"{retry_after:g}"))
        record("limited")
        _phase(client, phase_end, limited)
        # One last 429 asks for an hour: the client must wait at most retry_after_max.
        collector.respond_with(Response(429, retry_after="3600"))
        collector.set_default(None)
        record("after")
        flushed = client.flush()
        totals = client._worker.totals
        stats = client.stats()
    finally:
        client.shutdown(timeout=0)
        collector.stop()
    requests = collector.requests[before_requests:]
    limited_at = [i for i, r in enumerate(requests) if r.status == 429]
    last_429 = limited_at[-1] if limited_at else len(requests) - 1
    outage_end = requests[last_429].received_at if requests else time.monotonic()
    gaps: List[float] = []
    capped: Optional[Dict[str, float]] = None
    for index, (previous, following) in enumerate(zip(requests, requests[1:])):
        if previous.status != 429:
            continue
        gap = following.received_at - previous.received_at
        if index == last_429:
            capped = {"asked": 3600.0, "cap": policy.retry_after_max, "waited": round(gap, 3)}
        else:
            gaps.append(gap)
    return OutageReport(
        seed=seed,
        phases={
            "refused": refused,
            "503": unavailable,
            "429": limited,
        },
        outage_seconds=outage_end - outage_start,
        recorded=recorded,
        delivered=collector.message_ids,
        lost=sorted(set(recorded) - collector.message_ids),
        duplicates=collector.duplicates,
        failed_attempts=totals.failed_attempts,
        attempts_allowed=attempts_allowed(policy, outage_end - outage_start),
        statuses=dict(totals.statuses),
        retry_after=retry_after,
        retry_after_gaps=gaps,
        capped_retry_after=capped,
        flushed=flushed,
        leftovers={"ready": stats.ready, "leased": stats.leased, "dead": stats.dead},
        collector_errors=collector.errors,
    )


def _phase(client: Client, start: float, seconds: float, attempts: int = 2) -> float:
    """Let an outage phase last ``seconds``, and at least until the worker tried ``attempts``
    times in it (so a slow machine still sees every phase); return when it ended."""
    worker = client._worker
    before = worker.totals.failed_attempts
    deadline = start + seconds + PROCESS_TIMEOUT / 4
    while time.monotonic() < deadline:
        if (
            time.monotonic() >= start + seconds
            and worker.totals.failed_attempts - before >= attempts
        ):
            break
        time.sleep(0.005)
    return time.monotonic()


# ------------------------------------------------------------------------------------------------
# Concurrency: producers, drains and an in-process client on one file at once


@dataclass
class ConcurrencyReport:
    seed: int
    producers: int
    recorded: Set[str]
    delivered: Set[str]
    lost: List[str]
    duplicates: int
    duplicate_ids: List[str]
    producer_exit_codes: List[int]
    drain_results: List[Dict[str, Any]]
    cli_drains: List[Dict[str, Any]]
    leftovers: Dict[str, int]
    collector_errors: List[str]
    stderr: List[str]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.seed,
            "producers": self.producers,
            "events_recorded": len(self.recorded),
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "library_drains": self.drain_results,
            "cli_drain_runs": len(self.cli_drains),
            "left_in_queue": self.leftovers,
        }


def concurrency_campaign(
    workdir: Path,
    *,
    seed: int,
    producers: int = 4,
    events: int = 400,
    local_events: int = 100,
    pause: float = 0.002,
    library_drains: int = 2,
    cli_drains: int = 1,
) -> ConcurrencyReport:
    """``producers`` processes (each a Client with its worker), library drain loops, CLI drains
    run back to back, and a Client in this process, all on one queue file at the same time."""
    rng = random.Random(seed)
    collector = Collector(WRITE_KEY).start()
    queue = workdir / "shared" / "events.sqlite3"
    queue.parent.mkdir(parents=True, exist_ok=True)
    stop_file = workdir / "shared" / "stop"
    env = child_environment()
    drains = [
        subprocess.Popen(
            helper_command(
                "drain-loop", "--queue", queue, "--endpoint", collector.url, "--stop", stop_file
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(library_drains)
    ]
    cli_results: List[Dict[str, Any]] = []
    stop_cli = threading.Event()

    def cli_loop() -> None:
        while not stop_cli.is_set():
            cli_results.append(drain_cli(queue, collector.url))

    cli_threads = [
        threading.Thread(target=cli_loop) for _ in range(cli_drains if cli_available() else 0)
    ]
    for thread in cli_threads:
        thread.start()
    children = []
    for index in range(producers):
        ids_file = workdir / "shared" / f"producer{index}.ids"
        children.append(
            (
                ids_file,
                subprocess.Popen(
                    helper_command(
                        "produce",
                        "--queue",
                        queue,
                        "--endpoint",
                        collector.url,
                        "--ids",
                        ids_file,
                        "--prefix",
                        f"P{index}",
                        "--count",
                        events,
                        "--pause",
                        pause,
                        "--flush-at",
                        rng.choice([5, 10, 20]),
                        "--max-batch",
                        rng.choice([10, 50]),
                        "--seed",
                        rng.randrange(1 << 30),
                        "--exit-timeout",
                        5,
                    ),
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    client = Client(
        WRITE_KEY,
        endpoint=collector.url,
        queue_path=queue,
        flush_at=7,
        flush_interval=0.05,
        max_batch_messages=25,
        retry_policy=CHILD_RETRY,
        flush_timeout=30.0,
        exit_timeout=0.0,
    )
    recorded: Set[str] = set()
    stderr: List[str] = []
    try:
        for n in range(local_events):
            recorded.add(
                client.track(
                    f"local-{n % 5}", "Local Event", {"n": n}, message_id=f"local-{n}"
                ).message_id
            )
            time.sleep(rng.uniform(0, pause * 2))
        codes = []
        for ids_file, process in children:
            try:
                _, err = process.communicate(timeout=PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            codes.append(process.returncode)
            stderr.append(err.decode(errors="replace")[-2000:])
            recorded |= set(read_ids(ids_file)[0])
        client.flush()
        stop_file.touch()
        stop_cli.set()
        for thread in cli_threads:
            thread.join(PROCESS_TIMEOUT)
        results = []
        for process in drains:
            try:
                out, err = process.communicate(timeout=PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            stderr.append(err.decode(errors="replace")[-2000:])
            lines = out.decode().strip().splitlines()
            results.append(json.loads(lines[-1]) if lines else {"exit_code": process.returncode})
        drain_library(queue, collector.url)
        stats = client.stats()
    finally:
        stop_file.touch()
        stop_cli.set()
        for process in drains + [process for _, process in children]:
            if process.poll() is None:  # only after a failure above: never leave one behind
                process.kill()
                process.wait()
        client.shutdown(timeout=0)
        collector.stop()
    counts: Dict[str, int] = {}
    for message in collector.messages:
        counts[message["messageId"]] = counts.get(message["messageId"], 0) + 1
    return ConcurrencyReport(
        seed=seed,
        producers=producers,
        recorded=recorded,
        delivered=collector.message_ids,
        lost=sorted(recorded - collector.message_ids),
        duplicates=collector.duplicates,
        duplicate_ids=sorted(mid for mid, count in counts.items() if count > 1),
        producer_exit_codes=codes,
        drain_results=results,
        cli_drains=cli_results,
        leftovers={"ready": stats.ready, "leased": stats.leased, "dead": stats.dead},
        collector_errors=collector.errors,
        stderr=[text for text in stderr if text.strip()],
    )


# ------------------------------------------------------------------------------------------------
# Bad input: property-based fuzzing of every public call

CALLS = ("identify", "track", "page", "screen", "group", "alias")
REQUIRED = {
    "identify": ("traits",),
    "track": ("event", "properties"),
    "page": ("properties",),
    "screen": ("properties",),
    "group": ("groupId", "traits"),
    "alias": ("previousId", "userId"),
}


def call_strategy() -> Any:
    """Hypothesis strategy of ``(method, kwargs)``: every public call, every argument drawn
    from valid values, values of the wrong type and values JSON cannot carry."""
    import datetime as dt
    import enum

    from hypothesis import strategies as st

    from durable_analytics import messages

    class Color(enum.Enum):
        RED = "red"

    def cycle() -> Dict[str, Any]:
        loop: Dict[str, Any] = {"a": 1}
        loop["self"] = loop
        return loop

    offsets = st.builds(
        dt.timezone,
        st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23)),
    )
    moments = st.datetimes(timezones=st.none() | offsets)
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    )
    json_like = st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=10,
    )
    odd = st.one_of(
        st.floats(),
        st.binary(max_size=8),
        moments,
        st.dates(),
        st.times(),
        st.decimals(),
        st.uuids(),
        st.just(Color.RED),
        st.builds(object),
        st.sets(st.integers(), max_size=3),
        st.tuples(st.integers(), st.text(max_size=3)),
        st.integers(min_value=2**63),
        st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
        st.builds(cycle),
        st.just("x" * 40_000),
        st.just([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        st.dictionaries(
            st.integers() | st.none() | st.tuples(st.integers()), leaf, min_size=1, max_size=2
        ),
    )
    anything = st.one_of(
        json_like,
        odd,
        st.lists(odd, max_size=3),
        st.dictionaries(st.text(max_size=5), odd, max_size=3),
    )
    valid_ids = st.one_of(st.text(min_size=1, max_size=16), st.integers())
    valid_text = st.text(min_size=1, max_size=16)
    valid_mapping = st.one_of(
        st.none(), st.dictionaries(st.text(max_size=8), json_like, max_size=4)
    )
    valid = {
        "user_id": valid_ids,
        "anonymous_id": valid_ids,
        "previous_id": valid_ids,
        "group_id": valid_ids,
        "message_id": st.none() | valid_ids,
        "event": valid_text,
        "name": st.none() | valid_text,
        "category": st.none() | valid_text,
        "traits": valid_mapping,
        "properties": valid_mapping,
        "context": valid_mapping,
        "integrations": st.none() | st.dictionaries(st.text(max_size=8), st.booleans(), max_size=3),
        "timestamp": st.one_of(st.none(), moments, moments.map(lambda m: m.isoformat())),
    }
    odd_text = st.one_of(st.text(max_size=30), st.just(""), st.just("2026-13-45T99:99"))
    fields = {
        "identify": ("user_id", "anonymous_id", "traits"),
        "track": ("user_id", "anonymous_id", "event", "properties"),
        "page": ("user_id", "anonymous_id", "category", "name", "properties"),
        "screen": ("user_id", "anonymous_id", "category", "name", "properties"),
        "group": ("user_id", "anonymous_id", "group_id", "traits"),
        "alias": ("previous_id", "user_id"),
    }
    common = ("context", "timestamp", "integrations", "message_id")

    def kwargs_for(name: str) -> Any:
        """Valid values for a random subset of the arguments, then up to three of them (or
        missing ones) replaced by anything at all."""
        names = fields[name] + common
        base = st.fixed_dictionaries({}, optional={arg: valid[arg] for arg in names})
        broken = st.dictionaries(st.sampled_from(names), st.one_of(anything, odd_text), max_size=3)
        return st.builds(lambda good, bad: {**good, **bad}, base, broken)

    classes = {
        "identify": messages.Identify,
        "track": messages.Track,
        "page": messages.Page,
        "screen": messages.Screen,
        "group": messages.Group,
        "alias": messages.Alias,
    }
    calls = [st.tuples(st.just(name), kwargs_for(name)) for name in fields]
    typed = [
        st.tuples(
            st.just("enqueue"),
            kwargs_for(name).map(lambda kw, cls=classes[name]: {"message": cls(**kw)}),
        )
        for name in fields
    ]
    junk = st.tuples(st.just("enqueue"), st.fixed_dictionaries({"message": anything}))
    return st.one_of(*calls, *typed, junk)


def check_stored(data: str) -> Dict[str, Any]:
    """A stored row is a message the server accepts: parse it and check every required field."""
    message = json.loads(data)
    kind = message["type"]
    assert kind in CALLS, kind
    assert isinstance(message["messageId"], str) and message["messageId"]
    assert dt_parse(message["timestamp"]).utcoffset() is not None
    assert message["context"]["library"]["name"] == "durable-analytics"
    assert isinstance(message["integrations"], dict)
    if kind != "alias":
        assert any(
            isinstance(message.get(k), str) and message[k] for k in ("userId", "anonymousId")
        )
    for name in REQUIRED[kind]:
        assert name in message, (kind, name)
    if kind == "track":
        assert isinstance(message["event"], str) and message["event"]
    for name in ("groupId", "previousId", "userId"):
        if name in message and (kind in ("group", "alias") or name == "userId"):
            assert isinstance(message[name], str) and message[name], (kind, name)
    assert len(data.encode("utf-8")) <= 32_000
    return message


def dt_parse(text: str) -> Any:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class FuzzReport:
    seed: int
    tried: int
    stored: int
    rejected: Dict[str, int]
    ids: List[str]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.seed,
            "bad_inputs_tried": self.tried,
            "stored": self.stored,
            "rejected_by_error": self.rejected,
        }


def fuzz_client(client: Client, *, examples: int, seed: int) -> FuzzReport:
    """Throw ``examples`` drawn calls at ``client``. Each must store a message (and return its
    id) or raise a ``ValidationError`` subclass; anything else fails with the shrunk input."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    from durable_analytics import ValidationError

    report = FuzzReport(seed, 0, 0, {}, [])

    @fixed_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(call_strategy())
    def check(call: Tuple[str, Dict[str, Any]]) -> None:
        method, kwargs = call
        report.tried += 1
        try:
            result = getattr(client, method)(**kwargs)
        except ValidationError as exc:
            assert str(exc), f"{type(exc).__name__} without a message"
            name = type(exc).__name__
            report.rejected[name] = report.rejected.get(name, 0) + 1
            return
        success, message = result
        assert success is True and result.message_id == message["messageId"], result
        assert isinstance(result.message_id, str) and result.message_id, result
        report.stored += 1
        report.ids.append(result.message_id)

    check()
    return report


# ------------------------------------------------------------------------------------------------
# Child commands


def _produce(args: argparse.Namespace) -> int:
    """Record numbered events; write each id only after its call returned (then flush)."""
    rng = random.Random(args.seed)
    out = open(args.ids, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    client = Client(
        WRITE_KEY,
        endpoint=args.endpoint,
        queue_path=args.queue,
        flush_at=args.flush_at,
        flush_interval=0.05,
        max_batch_messages=args.max_batch,
        retry_policy=CHILD_RETRY,
        flush_timeout=30.0,
        exit_timeout=args.exit_timeout,
    )
    out.write(READY + "\n")
    out.flush()
    for n in range(args.count):
        message_id = client.track(
            f"user-{n % 13}",
            "Reliability Event",
            {"n": n, "run": args.prefix},
            message_id=f"{args.prefix}-{n}",
        ).message_id
        out.write(message_id + "\n")
        out.flush()
        if args.pause:
            time.sleep(rng.uniform(0, args.pause))
    out.write(APPENDED + "\n")
    out.flush()
    if args.hold:  # stay alive until killed, delivering what is left
        client.flush()
        out.write(FLUSHED + "\n")
        out.flush()
        time.sleep(PROCESS_TIMEOUT)
    return 0


def _drain_loop(args: argparse.Namespace) -> int:
    """A long-running drain: worker cycles until the stop file exists and nothing is ready."""
    store = MessageStore(args.queue)
    transport = Transport(WRITE_KEY, args.endpoint, timeout=5.0)
    worker = Worker(
        store,
        transport,
        policy=CHILD_RETRY,
        flush_at=1,
        flush_interval=0.05,
        max_batch_messages=30,
    )
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        delay, reason = worker.cycle(force=True)
        if reason != "sent" and args.stop.exists() and store.stats().ready == 0:
            break
        if delay > 0:
            time.sleep(min(delay, 0.02))
    print(json.dumps({"delivered": worker.totals.delivered, "requests": worker.totals.requests}))
    transport.close()
    store.close()
    return 0


def _record_into(client: Client, prefix: str, count: int, ids_file: Path) -> None:
    with open(ids_file, "a", encoding="utf-8", buffering=1) as out:
        for n in range(count):
            out.write(
                client.track(f"{prefix}-user", "Fork Event", message_id=f"{prefix}-{n}").message_id
            )
            out.write("\n")


def _multiprocessing_child(client: Client, prefix: str, count: int, ids_file: Path) -> None:
    """Runs in a ``multiprocessing`` child (fork context) and returns normally."""
    _record_into(client, prefix, count, ids_file)


def _fork_parent(args: argparse.Namespace) -> int:
    """A client made before fork, used by the parent, os.fork children and multiprocessing
    children at once; a parent thread keeps recording while the forks happen, so locks may be
    held at the moment of fork. Prints a JSON report; exits normally."""
    import multiprocessing

    client = Client(
        WRITE_KEY,
        endpoint=args.endpoint,
        queue_path=args.queue,
        flush_at=5,
        flush_interval=0.05,
        max_batch_messages=20,
        retry_policy=CHILD_RETRY,
        flush_timeout=20.0,
        exit_timeout=20.0,
    )
    _record_into(client, "parent", args.count, args.dir / "parent.ids")
    # A child that hangs prints every thread's stack to stderr before the parent kills it.
    os.register_at_fork(
        after_in_child=lambda: faulthandler.dump_traceback_later(PROCESS_TIMEOUT / 4)
    )
    stop = threading.Event()

    def background() -> None:
        n = 0
        with open(args.dir / "background.ids", "a", encoding="utf-8", buffering=1) as out:
            while not stop.is_set():
                out.write(
                    client.track("bg-user", "Background", message_id=f"bg-{n}").message_id + "\n"
                )
                n += 1
                time.sleep(0.001)

    thread = threading.Thread(target=background)
    thread.start()
    time.sleep(0.02)
    pids = []
    for index in range(args.children):
        pid = os.fork()
        if pid == 0:  # the child: record, then leave through sys.exit so that atexit runs
            code = 1
            try:
                _record_into(client, f"fork{index}", args.count, args.dir / f"fork{index}.ids")
                code = 0
            finally:
                sys.exit(code)
        pids.append(pid)
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(
            target=_multiprocessing_child,
            args=(client, f"mp{index}", args.count, args.dir / f"mp{index}.ids"),
        )
        for index in range(args.children)
    ]
    for process in processes:
        process.start()
    report: Dict[str, Any] = {"fork_exit_codes": [], "mp_exit_codes": [], "hung": []}
    deadline = time.monotonic() + PROCESS_TIMEOUT / 2
    for index, pid in enumerate(pids):
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                report["fork_exit_codes"].append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                report["hung"].append(f"fork{index}")
                report["fork_exit_codes"].append(None)
                break
            time.sleep(0.01)
    for index, process in enumerate(processes):
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
            report["hung"].append(f"mp{index}")
        report["mp_exit_codes"].append(process.exitcode)
    stop.set()
    thread.join()
    # multiprocessing children end with os._exit (no atexit): what they left is delivered
    # by the parent's worker, which must carry on after the forks.
    settle = time.monotonic() + 20.0
    while time.monotonic() < settle:
        stats = client.stats()
        if stats.ready == 0 and stats.leased == 0:
            break
        time.sleep(0.02)
    stats = client.stats()
    report["left"] = {"ready": stats.ready, "leased": stats.leased, "dead": stats.dead}
    report["flushed"] = client.flush()
    print(json.dumps(report), flush=True)
    return 0


def _try_record(args: argparse.Namespace) -> int:
    """Open a client on ``--queue`` and record one event; print what happened as JSON."""
    outcome: Dict[str, Any] = {"stored": None, "error": None, "message": None}
    try:
        client = Client(
            WRITE_KEY,
            endpoint=args.endpoint,
            queue_path=args.queue,
            flush_at=1_000,
            flush_interval=3600.0,
            exit_timeout=0.0,
        )
        outcome["stored"] = client.track("ro-user", "Read Only", message_id="ro-event").message_id
    except Exception as exc:  # reported to the test, which asserts the type and message
        outcome["error"] = type(exc).__name__
        outcome["mro"] = [cls.__name__ for cls in type(exc).__mro__]
        outcome["message"] = str(exc)
    print(json.dumps(outcome), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    produce = sub.add_parser("produce")
    produce.add_argument("--queue", type=Path, required=True)
    produce.add_argument("--endpoint", required=True)
    produce.add_argument("--ids", type=Path, required=True)
    produce.add_argument("--prefix", required=True)
    produce.add_argument("--count", type=int, required=True)
    produce.add_argument("--pause", type=float, default=0.0)
    produce.add_argument("--flush-at", type=int, default=10)
    produce.add_argument("--max-batch", type=int, default=20)
    produce.add_argument("--seed", type=int, default=0)
    produce.add_argument("--exit-timeout", type=float, default=0.0)
    produce.add_argument("--hold", action="store_true")
    produce.set_defaults(run=_produce)
    drain = sub.add_parser("drain-loop")
    drain.add_argument("--queue", type=Path, required=True)
    drain.add_argument("--endpoint", required=True)
    drain.add_argument("--stop", type=Path, required=True)
    drain.set_defaults(run=_drain_loop)
    attempt = sub.add_parser("try-record")
    attempt.add_argument("--queue", type=Path, required=True)
    attempt.add_argument("--endpoint", required=True)
    attempt.set_defaults(run=_try_record)
    fork = sub.add_parser("fork-parent")
    fork.add_argument("--queue", type=Path, required=True)
    fork.add_argument("--endpoint", required=True)
    fork.add_argument("--dir", type=Path, required=True)
    fork.add_argument("--children", type=int, default=3)
    fork.add_argument("--count", type=int, default=50)
    fork.set_defaults(run=_fork_parent)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
