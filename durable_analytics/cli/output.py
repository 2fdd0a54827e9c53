"""What the commands print: durations, one-line texts, JSON, the self-rewriting progress line
on a terminal, the library's warnings on stderr and the one-line error."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import IO, Any, Optional

from .options import PROG

PROGRESS_EVERY = 0.25  # seconds between two progress lines: at most four a second

log = logging.getLogger("durable_analytics")


def age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {one_line(message)}\n")
    sys.stderr.flush()


class Progress:
    """One self-rewriting status line on a terminal; silent everywhere else."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether a new line would be shown now (at most four a second)."""
        return self.enabled and time.monotonic() - self._last >= PROGRESS_EVERY

    def show(self, line: str) -> None:
        if not self.due():
            return
        self._last = time.monotonic()
        line = line[: self._columns() - 1]  # a wrapped line could not be rewritten in place
        with self._lock:
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return 1 << 16
        return columns if columns > 1 else 1 << 16

    def clear(self) -> None:
        with self._lock:
            if self.enabled and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0


class _LogHandler(logging.Handler):
    """The library's warnings on stderr, prefixed, without tearing the progress line."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: Optional[Progress] = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.progress is not None:
                self.progress.clear()
            sys.stderr.write(f"{PROG}: {one_line(record.getMessage())}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


LOG_HANDLER = _LogHandler()


def setup_logging(quiet: bool) -> None:
    if LOG_HANDLER not in log.handlers:
        log.addHandler(LOG_HANDLER)
    LOG_HANDLER.setLevel(logging.ERROR if quiet else logging.WARNING)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)
