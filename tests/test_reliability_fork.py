"""Fork: a client made before ``fork()`` keeps working in the parent and in every child.

The parent (a child process of the test, so that pytest itself never forks) keeps recording
from a thread while it forks, so a lock may be held at the moment of fork; children made with
``os.fork`` leave through ``sys.exit`` (atexit runs), ``multiprocessing`` children return
normally (their interpreter ends with ``os._exit``). Nothing is lost and nothing hangs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from reliability_helpers import (
    WRITE_KEY,
    child_environment,
    helper_command,
    read_ids,
    wasted_deliveries,
)

from durable_analytics.testing import Collector

CHILDREN = 3
EVENTS = 40
MAX_BATCH = 20  # the fork-parent helper's max_batch_messages


def test_client_created_before_fork_works_in_every_child(tmp_path: Path) -> None:
    with Collector(WRITE_KEY) as collector:
        result = subprocess.run(
            helper_command(
                "fork-parent",
                "--queue",
                tmp_path / "q" / "events.sqlite3",
                "--endpoint",
                collector.url,
                "--dir",
                tmp_path,
                "--children",
                CHILDREN,
                "--count",
                EVENTS,
            ),
            env=child_environment(),
            capture_output=True,
            timeout=120,
        )
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == 0, stderr
        report = json.loads(result.stdout.decode().strip().splitlines()[-1])
        assert report["hung"] == [], report
        assert report["fork_exit_codes"] == [0] * CHILDREN, (report, stderr)
        assert report["mp_exit_codes"] == [0] * CHILDREN, (report, stderr)
        assert report["left"] == {"ready": 0, "leased": 0, "dead": 0}, report
        assert report["flushed"] is True

        recorded = {}
        for name in ["parent", "background"] + [
            f"{kind}{index}" for kind in ("fork", "mp") for index in range(CHILDREN)
        ]:
            recorded[name] = read_ids(tmp_path / f"{name}.ids")[0]
        for name, ids in recorded.items():
            if name != "background":
                assert len(ids) == EVENTS, (name, len(ids))
        everything = {mid for ids in recorded.values() for mid in ids}
        # Delivered by the processes themselves: no drain was needed.
        assert everything <= collector.message_ids, sorted(everything - collector.message_ids)[:10]
        assert collector.message_ids == everything
        # A multiprocessing child ends with os._exit(): no atexit, so if its worker had a batch
        # in flight (accepted, not yet acknowledged) that batch is taken back by the parent and
        # sent again, like after a kill: at most one batch (20 here) per such child.
        wasted = wasted_deliveries(collector)
        assert len(wasted) <= CHILDREN, [ids for _, ids, _ in wasted]
        assert all(set(ids) == again for _, ids, again in wasted)
        assert collector.duplicates == sum(len(again) for _, _, again in wasted)
        assert collector.duplicates <= CHILDREN * MAX_BATCH
        assert "Traceback" not in stderr, stderr
