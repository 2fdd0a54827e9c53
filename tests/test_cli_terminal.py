"""What the command shows on a terminal and keeps quiet elsewhere: ``drain``'s progress line
(delivered, rate, what is left, ETA) and ``stats --watch`` redrawing in place, run as real
programs on a real pseudo-terminal (``pty.openpty``), and the same commands through pipes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from cli_helpers import cli, fill

from durable_analytics.cli.drain import progress_line
from durable_analytics.cli.stats import redraw
from durable_analytics.testing import Collector, Response


def on_a_terminal(
    args: List[str], env: Dict[str, str], stream: str, timeout: float = 60, columns: int = 0
) -> Tuple[int, str, str]:
    """Run ``python -m durable_analytics ARGS`` with ``stream`` ("stdout" or "stderr") on a
    pseudo-terminal (``columns`` wide, if given) and the other on a pipe; (exit status,
    terminal text, piped text)."""
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        text=True,
        **streams,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        piped = (proc.stdout if stream == "stderr" else proc.stderr).read()  # type: ignore[union-attr]
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return status, seen.decode().replace("\r\n", "\n"), piped


@pytest.mark.parametrize(
    "delivered, elapsed, left, reason, delay, line",
    [
        (500, 2.0, 700, "delivered", 0.0, "drain: 500 delivered, 250/s, 700 left, ETA 2.8s"),
        (0, 1.0, 700, "backoff", 4.0, "drain: 0 delivered, 0/s, 700 left, ETA -, retrying in 4.0s"),
        (1200, 0.5, 0, "delivered", 0.0, "drain: 1,200 delivered, 2,400/s, 0 left, ETA -"),
        (10, 10.0, 7200, "idle", 0.1,
         "drain: 10 delivered, 1/s, 7,200 left, ETA 2h 00m, waiting for other takers' batches"),
        (0, 0.0, 5, "delivered", 0.0, "drain: 0 delivered, 0/s, 5 left, ETA -"),
    ],
)  # fmt: skip
def test_progress_line_table(
    delivered: int, elapsed: float, left: int, reason: str, delay: float, line: str
) -> None:
    assert progress_line(delivered, elapsed, left, reason, delay) == line


@pytest.mark.parametrize("lines, text", [(0, ""), (1, "\x1b[1F\x1b[J"), (12, "\x1b[12F\x1b[J")])
def test_redraw_table(lines: int, text: str) -> None:
    assert redraw(lines) == text


def test_drain_shows_progress_on_a_terminal(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 1500)
    collector.set_default(Response(200, delay=0.3))  # three batches, on the wire together
    status, terminal, stdout = on_a_terminal(["drain"], keyed, "stderr")
    assert status == 0, terminal
    assert re.fullmatch(
        r"drain: delivered 1,500, dead-lettered 0, left 0, elapsed \d+\.\ds\n", stdout
    )
    lines = [part for part in terminal.split("\r") if part.strip()]
    assert lines, repr(terminal)
    for line in lines:
        assert re.fullmatch(
            r"drain: (0|500|1,000|1,500) delivered, [\d,]+/s, (1,500|1,000|500|0) left, "
            r"ETA [^,]+ *",
            line,
        ), repr(line)
    assert re.match(r"drain: (0 delivered, .*1,500|500 delivered, .*1,000) left", lines[0])
    last = lines[-1].rstrip()
    assert terminal.endswith("\r" + " " * len(last) + "\r"), "cleared before the summary"


def test_drain_progress_fits_a_narrow_terminal(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 1000)
    collector.set_default(Response(200, delay=0.3))
    status, terminal, _ = on_a_terminal(["drain"], keyed, "stderr", columns=30)
    assert status == 0
    shown = [part for part in terminal.split("\r") if part.strip()]
    assert shown and all(len(part) <= 29 for part in shown), shown
    assert re.match(r"drain: (0|500) delivered, ", shown[0])


def test_drain_is_quiet_without_a_terminal(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 1500)
    collector.set_default(Response(200, delay=0.3))
    result = cli("drain", env=keyed)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("drain: delivered 1,500, dead-lettered 0, left 0, elapsed ")
    assert result.stdout.count("\n") == 1


def test_drain_json_and_quiet_keep_a_terminal_clean(
    keyed: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 10)
    status, terminal, stdout = on_a_terminal(["drain", "--json"], keyed, "stderr")
    assert (status, terminal) == (0, "")
    assert json.loads(stdout)["delivered"] == 10
    fill(queue_file, 10)
    status, terminal, stdout = on_a_terminal(["drain", "--quiet"], keyed, "stderr")
    assert (status, terminal, stdout) == (0, "", "")


def _table_lines(text: str) -> List[str]:
    return [re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", line) for line in text.split("\n")]


def test_stats_watch_redraws_in_place_on_a_terminal(
    keyed: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 3)
    status, terminal, stderr = on_a_terminal(
        ["stats", "--watch", "0.01", "--count", "3"], keyed, "stdout"
    )
    assert (status, stderr) == (0, "")
    draws = terminal.split("\x1b[13F\x1b[J")
    assert len(draws) == 3, repr(terminal)
    table = (
        "every 0.01s, HH:MM:SS (Ctrl-C to stop)\n"
        f"queue           {queue_file}\n"
        "ready           3\n"
        "leased          0\n"
        "dead-lettered   0\n"
        "dropped         0 (queue full, all time)\n"
        "filtered        0 (by before_send, all time)\n"
        "delivered       0 (all time)\n"
        "failed uploads  0 (attempts kept and retried, all time)\n"
        "queued bytes    {bytes}\n"
        "bytes on disk   {disk}\n"
        "oldest message  {age} ago\n"
        "last error      -\n"
    )
    for draw in draws:
        assert draw.count("\n") == 13  # the header and 12 rows: what the next draw goes up
        masked = re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", draw)
        masked = re.sub(r"(queued bytes +)[\d,]+", r"\1{bytes}", masked)
        masked = re.sub(r"(bytes on disk +)[\d,]+", r"\1{disk}", masked)
        masked = re.sub(r"(oldest message +)\S+", r"\1{age}", masked)
        assert masked == table


def test_stats_watch_without_a_terminal_prints_one_snapshot_after_another(
    keyed: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 2)
    result = cli("stats", "--watch", "0.01", "--count", "3", "--json", env=keyed)
    assert (result.returncode, result.stderr) == (0, "")
    snapshots = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["ready"] for s in snapshots] == [2, 2, 2]
    table = cli("stats", "--watch", "0.01", "--count", "2", env=keyed)
    assert "\x1b" not in table.stdout
    assert table.stdout.count("ready           2\n") == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stats_watch_runs_until_interrupted_and_exits_0(
    keyed: Dict[str, str], queue_file: Path, signum: int
) -> None:
    fill(queue_file, 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", "stats", "--watch", "0.05", "--json"],
        env=keyed,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first: Optional[str] = proc.stdout.readline()
    assert first and json.loads(first)["ready"] == 1
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    assert (proc.returncode, err) == (0, "")
    assert all(json.loads(line)["ready"] == 1 for line in out.splitlines())
