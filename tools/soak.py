"""The reliability soak: the test suites' campaigns, run long, with a table of figures.

    python tools/soak.py --kills 200 --events 100000 --seed 7

Runs, against a real loopback collector with real processes and queue files:

- crash: ``--kills`` producer processes, each SIGKILLed at a random moment (during appends,
  during uploads, while the server holds an accepted batch unanswered), restarted on the same
  file, then drained; ``--events`` events are planned over all of them;
- outage: refused connections, 503, 429 with Retry-After, recovery (``--outage`` seconds);
- concurrency: 4 producers, 2 drain loops, CLI drains and a client, on one file;
- bad input: ``--fuzz`` property-based calls with arbitrary arguments.

Prints a table, writes every figure to ``--out`` (JSON) and exits 1 if any promise broke:
an event lost, a duplicate that no kill explains, a retry storm, an invalid message stored.
The campaigns live in ``tests/reliability_helpers.py``, shared with the test suites.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import reliability_helpers as helpers  # noqa: E402

from durable_analytics import Client, __version__  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402


def _crash(args: argparse.Namespace, workdir: Path, problems: List[str]) -> Dict[str, Any]:
    per_run = max(20, args.events // args.kills)
    report = helpers.crash_campaign(
        workdir / "crash",
        seed=args.seed,
        kills=args.kills,
        lanes=args.lanes,
        events=(max(10, per_run // 2), per_run + per_run // 2),
        pause=args.pause,
        max_batch_messages=20,
        cli_drain_lanes=(0,),
        log=(lambda line: print(f"  {line}", file=sys.stderr))
        if args.verbose
        else (lambda _: None),
    )
    summary = report.as_dict()
    if report.lost:
        problems.append(f"crash: {len(report.lost)} returned event(s) lost: {report.lost[:10]}")
    if report.unexpected:
        problems.append(f"crash: delivered ids that were never recorded: {report.unexpected[:10]}")
    if report.unattributed:
        problems.append(f"crash: redeliveries no kill explains: {report.unattributed[:5]}")
    if report.duplicates > report.kills * report.max_batch_messages:
        problems.append(f"crash: {report.duplicates} duplicates > one batch per kill")
    if any(lane != {"ready": 0, "leased": 0, "dead": 0} for lane in report.leftovers.values()):
        problems.append(f"crash: left in the queues after draining: {report.leftovers}")
    summary["planned_events"] = sum(run.planned for run in report.runs)
    return summary


def _outage(args: argparse.Namespace, workdir: Path, problems: List[str]) -> Dict[str, Any]:
    total = args.outage
    report = helpers.outage_campaign(
        workdir / "outage",
        seed=args.seed,
        refused=total * 0.4,
        unavailable=total * 0.3,
        limited=total * 0.3,
        retry_after=0.5,
        events_per_phase=200,
    )
    summary = report.as_dict()
    if report.lost or not report.flushed:
        problems.append(f"outage: {len(report.lost)} event(s) not delivered")
    if report.duplicates:
        problems.append(f"outage: {report.duplicates} duplicate(s) without any kill")
    if report.failed_attempts > report.attempts_allowed:
        problems.append(
            f"outage: {report.failed_attempts} attempts > {report.attempts_allowed} allowed"
        )
    if report.retry_after_gaps and min(report.retry_after_gaps) < report.retry_after:
        problems.append(f"outage: Retry-After not obeyed: {min(report.retry_after_gaps):.3f}s")
    return summary


def _concurrency(args: argparse.Namespace, workdir: Path, problems: List[str]) -> Dict[str, Any]:
    report = helpers.concurrency_campaign(
        workdir / "concurrency",
        seed=args.seed,
        producers=4,
        events=args.concurrent_events,
        local_events=args.concurrent_events // 4,
        library_drains=2,
        cli_drains=1,
    )
    summary = report.as_dict()
    if report.lost:
        problems.append(f"concurrency: {len(report.lost)} event(s) lost: {report.lost[:10]}")
    if report.duplicates:
        problems.append(
            f"concurrency: {report.duplicates} duplicate(s) without any kill: "
            f"{report.duplicate_ids[:10]}"
        )
    if any(code != 0 for code in report.producer_exit_codes):
        problems.append(f"concurrency: producer exit codes {report.producer_exit_codes}")
    return summary


def _fuzz(args: argparse.Namespace, workdir: Path, problems: List[str]) -> Dict[str, Any]:
    queue = workdir / "fuzz" / "events.sqlite3"
    with Collector() as collector:
        client = Client(
            "soak-key",
            endpoint=collector.url,
            queue_path=queue,
            flush_at=10**9,
            flush_interval=3600.0,
            exit_timeout=0.0,
        )
        try:
            report = helpers.fuzz_client(client, examples=args.fuzz, seed=args.seed)
            rows = helpers.queue_rows(queue)
            for _, data, _ in rows:
                helpers.check_stored(data)
            if len(rows) != report.stored or client.stats().ready != report.stored:
                problems.append(f"fuzz: {len(rows)} rows stored for {report.stored} calls")
            if not client.flush(timeout=120) or collector.message_ids != set(report.ids):
                problems.append("fuzz: stored messages were not all accepted by the collector")
        finally:
            client.shutdown(timeout=0)
    return report.as_dict()


def _table(results: Dict[str, Any]) -> str:
    crash, outage = results["crash"], results["outage"]
    concurrency, fuzz = results["concurrency"], results["fuzz"]
    rows = [
        ("SIGKILLs (random moments)", f"{crash['kills']:,}"),
        ("  during appends", f"{crash['kills_during_appends']:,}"),
        ("  with an accepted, unacknowledged batch", f"{crash['kills_with_redelivery']:,}"),
        ("events recorded (calls that returned)", f"{crash['events_recorded']:,}"),
        ("events lost", f"{crash['lost']:,}"),
        ("delivered although the kill cut the call short", f"{crash['delivered_cut_short']:,}"),
        (
            "duplicates (redeliveries, same messageId)",
            f"{crash['duplicates']:,} in {crash['batches_redelivered']} batch(es)",
        ),
        ("duplicates no kill explains", f"{crash['unattributed_redeliveries']:,}"),
        ("outage length", f"{outage['outage_seconds']:.1f} s"),
        (
            "requests sent during the outage",
            f"{outage['requests_during_outage']} (backoff allows "
            f"{outage['requests_allowed_by_backoff']})",
        ),
        (
            "shortest wait after a 429 (Retry-After)",
            f"{outage['min_gap_after_429']} s (asked {outage['retry_after_seconds']} s)",
        ),
        ("outage events lost / duplicated", f"{outage['lost']} / {outage['duplicates']}"),
        (
            "concurrency: events, lost, duplicates",
            f"{concurrency['events_recorded']:,}, {concurrency['lost']}, "
            f"{concurrency['duplicates']}",
        ),
        ("bad inputs tried", f"{fuzz['bad_inputs_tried']:,}"),
        (
            "  stored valid / rejected with ValidationError",
            f"{fuzz['stored']:,} / {sum(fuzz['rejected_by_error'].values()):,}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200, help="producer runs SIGKILLed")
    parser.add_argument("--events", type=int, default=100_000, help="events planned in all")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--lanes", type=int, default=2, help="queue files killed in parallel")
    parser.add_argument("--pause", type=float, default=0.001, help="max pause between events")
    parser.add_argument("--outage", type=float, default=6.0, help="outage length in seconds")
    parser.add_argument("--concurrent-events", type=int, default=2_000, help="per producer")
    parser.add_argument("--fuzz", type=int, default=5_000, help="bad-input examples")
    parser.add_argument("--out", type=Path, default=Path("soak.json"), help="JSON results")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every run")
    args = parser.parse_args(argv)
    if args.kills < args.lanes:
        parser.error("--kills must be at least --lanes")
    logging.getLogger("durable_analytics").setLevel(logging.ERROR if not args.verbose else 20)
    logging.getLogger("durable_analytics").addHandler(logging.NullHandler())

    command = (
        "python tools/soak.py "
        + " ".join(
            f"--{name.replace('_', '-')} {getattr(args, name)}"
            for name in ("kills", "events", "seed", "lanes", "pause", "outage", "concurrent_events")
        )
        + f" --fuzz {args.fuzz}"
    )
    results: Dict[str, Any] = {
        "command": command,
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    problems: List[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="durable-analytics-soak-") as tmp:
        workdir = Path(tmp)
        for name, run in (
            ("crash", _crash),
            ("outage", _outage),
            ("concurrency", _concurrency),
            ("fuzz", _fuzz),
        ):
            print(f"soak: {name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            results[name] = run(args, workdir, problems)
            results[name]["elapsed_seconds"] = round(time.monotonic() - began, 1)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    results["problems"] = problems
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

    print(_table(results))
    print(f"\n{command}\n{results['elapsed_seconds']} s; figures in {args.out}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
