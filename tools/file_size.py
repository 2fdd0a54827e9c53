"""Measure the queue file's size on disk before and after draining N events.

    python tools/file_size.py [--events 1000000] [--size 1100] [--batch 1] [--json out.json]

1. N track events of about ``--size`` bytes of JSON are appended to a new queue file, one per
   transaction as ``track()`` commits them (``--batch 500``: 500 per transaction, faster),
   with no worker running: the WAL is bounded by SQLite's automatic checkpoint only;
2. the file, its WAL and its shared-memory file are measured;
3. ``drain`` delivers everything to a local collector (127.0.0.1) with the library's worker;
4. the three files are measured again: the drained file keeps its schema and a small reserve
   of free pages, and gives the rest back.

Every figure comes from a real file in a temporary directory (``--dir`` to choose it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from durable_analytics.cli.drain import drain_queue  # noqa: E402
from durable_analytics.messages import Encoder, Track  # noqa: E402
from durable_analytics.store import MessageStore  # noqa: E402
from durable_analytics.testing import Collector  # noqa: E402
from durable_analytics.transport import Transport  # noqa: E402


def sizes(path: Path) -> Dict[str, int]:
    """Bytes of the database, its WAL and its shared-memory file."""
    found = {}
    for name, file in (
        ("db", path),
        ("wal", Path(f"{path}-wal")),
        ("shm", Path(f"{path}-shm")),
    ):
        found[name] = file.stat().st_size if file.exists() else 0
    found["total"] = sum(found.values())
    return found


def append_events(store: MessageStore, count: int, size: int, batch: int) -> float:
    """Append ``count`` encoded track events; return the seconds it took."""
    encoder = Encoder()
    pad = "x" * max(0, size - len(encoder.encode(Track(user_id="u", event="Sized")).json) - 12)
    started = time.perf_counter()
    pending = []
    for n in range(count):
        encoded = encoder.encode(
            Track(user_id=f"user-{n % 1000}", event="Sized", properties={"pad": pad})
        )
        pending.append((encoded.json, encoded.size))
        if len(pending) >= batch:
            store.append_many(pending)
            pending = []
    if pending:
        store.append_many(pending)
    return time.perf_counter() - started


def measure(directory: Path, events: int, size: int, batch: int) -> Dict[str, Any]:
    path = directory / "file_size.sqlite3"
    store = MessageStore.open(path)
    with Collector(keep=100) as collector:
        transport = Transport("file-size-key", collector.url)
        try:
            append_seconds = append_events(store, events, size, batch)
            before = sizes(path)
            stats = store.stats()
            started = time.perf_counter()
            result = drain_queue(store, transport, timeout=24 * 3600)
            drain_seconds = time.perf_counter() - started
            after = sizes(path)
        finally:
            transport.close()
            store.close()
    return {
        "events": events,
        "message_bytes": stats.queued_bytes // max(1, stats.ready + stats.leased),
        "held": stats.ready + stats.leased,
        "dropped": stats.dropped,
        "per_transaction": batch,
        "append_seconds": round(append_seconds, 1),
        "drain_seconds": round(drain_seconds, 1),
        "delivered": result.delivered,
        "left": result.left,
        "before": before,
        "after": after,
        "wal_bytes_per_event_before": round(before["wal"] / max(1, events), 1),
    }


def show(report: Dict[str, Any]) -> None:
    mb = 1024 * 1024
    print(
        f"{report['events']:,} events of ~{report['message_bytes']:,} bytes "
        f"({report['held']:,} held, {report['dropped']:,} dropped at the bound), "
        f"{report['per_transaction']} per transaction"
    )
    for phase in ("before", "after"):
        files = report[phase]
        db, wal, shm, total = (files[k] / mb for k in ("db", "wal", "shm", "total"))
        print(
            f"  {phase + ' drain':<13} db {db:9.1f} MB   wal {wal:7.1f} MB"
            f"   shm {shm:5.2f} MB   total {total:9.1f} MB"
        )
    print(
        f"  delivered {report['delivered']:,}, left {report['left']:,}; appends "
        f"{report['append_seconds']} s, drain {report['drain_seconds']} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1_100, help="JSON bytes per event, about")
    parser.add_argument("--batch", type=int, default=1, help="events per append transaction")
    parser.add_argument("--dir", type=Path, help="where to make the file (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        report = measure(Path(directory), args.events, args.size, args.batch)
    show(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
