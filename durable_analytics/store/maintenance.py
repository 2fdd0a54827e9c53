"""Keeping the file's disk use bounded: WAL checkpoints, and giving free pages back.

A queue file is written at one end and deleted at the other, so deleted messages leave free
pages. A new file is created with ``auto_vacuum=INCREMENTAL`` and the worker gives free pages
back a few at a time (``incremental_vacuum``: one short write transaction per step, so the
callers' appends wait a few milliseconds at most). A file created before that (``auto_vacuum``
off) is converted once by a ``VACUUM``, which rewrites every live page while holding the write
lock: it is done only when the file holds little data, typically right after a drain.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Optional

from .connection import Connection

log = logging.getLogger("durable_analytics")

_WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024  # the worker checkpoints past this (each one fsyncs)
FREE_RESERVE_PAGES = 256  # free pages kept for the next appends to reuse
VACUUM_STEP_PAGES = 512  # pages given back per transaction (a few ms of write lock)
_STEPS_PER_BATCH = 4  # between two batches, at most this many steps
CONVERT_MAX_BYTES = 4 * 1024 * 1024  # an old file is converted only when it holds less data
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
_IDLE_WAL_BYTES = 1024 * 1024  # when idle, a WAL past this is truncated
_TRUNCATE_WAIT_MS = 50  # how long an idle WAL truncation waits for other connections


class Maintenance(Connection):
    """``maintain`` (the worker's, between batches and when idle), ``give_back``,
    ``checkpoint`` and ``vacuum``."""

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (bounded disk use)."""
        self._read("PRAGMA wal_checkpoint(TRUNCATE)")

    def maintain(self, idle: bool = False) -> bool:
        """Give free pages back and checkpoint the WAL once it passes a few MB.

        Runs on the side connection and takes no lock of this object, so appends go on while
        the checkpoint copies pages and syncs the file. PASSIVE: it never waits for, nor
        blocks, another process. ``idle``: nothing else to do, give back all there is.
        Returns whether it checkpointed.
        """
        freed = self.give_back(None if idle else _STEPS_PER_BATCH)
        try:
            wal_size = os.stat(f"{self.file}-wal").st_size
        except OSError:
            return False
        shrink = idle and wal_size > _IDLE_WAL_BYTES
        if wal_size < _WAL_CHECKPOINT_BYTES and not freed and not shrink:
            return False
        with self._side_lock:
            try:
                conn = self._side_connection()
                if shrink:
                    # Nothing else to do: shrink the WAL file too. TRUNCATE makes new writers
                    # wait while it runs, so it waits for others only this briefly.
                    conn.execute(f"PRAGMA busy_timeout={_TRUNCATE_WAIT_MS}")
                    try:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    finally:
                        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                else:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return True

    def give_back(self, steps: Optional[int] = None) -> int:
        """Return free pages past a small reserve to the file system, ``VACUUM_STEP_PAGES``
        per transaction, at most ``steps`` transactions (``None``: until done). The file
        shrinks at the next checkpoint. Returns the number of pages given back."""
        with self._side_lock:
            try:
                conn = self._side_connection()
                if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                    return self._convert(conn)
                freed = 0
                while steps is None or steps > 0:
                    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                    if free <= FREE_RESERVE_PAGES:
                        break
                    step = min(free - FREE_RESERVE_PAGES, VACUUM_STEP_PAGES)
                    # executescript runs the pragma to completion (execute() frees one page).
                    conn.executescript(f"PRAGMA incremental_vacuum({step})")
                    freed += free - conn.execute("PRAGMA freelist_count").fetchone()[0]
                    steps = None if steps is None else steps - 1
                return freed
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _convert(self, conn: sqlite3.Connection) -> int:
        """Rebuild a file made without incremental vacuum, once, if it holds little data."""
        pages, free = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count")
        )
        if (pages - free) * self._page_size > CONVERT_MAX_BYTES:
            return 0
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        log.info("queue file %s rebuilt to give free space back from now on", self.file)
        return free

    def vacuum(self) -> None:
        """Rebuild the file to return every free page to the file system (holds the write
        lock for as long as it copies the live data; ``give_back`` does it in short steps)."""
        self._read("PRAGMA auto_vacuum=INCREMENTAL")
        self._read("VACUUM")
        self.checkpoint()
