"""Keeping the file's disk use bounded: WAL checkpoints and vacuum."""

from __future__ import annotations

import os
import sqlite3

from .connection import Connection

_WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024  # the worker checkpoints past this (each one fsyncs)


class Maintenance(Connection):
    """``checkpoint``, ``maintain`` (the worker's, between batches) and ``vacuum``."""

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (bounded disk use)."""
        self._read("PRAGMA wal_checkpoint(TRUNCATE)")

    def maintain(self) -> bool:
        """Checkpoint the WAL once it passes a few MB; called by the worker between batches.

        Runs on a connection of its own and takes no lock of this object, so appends go on
        while the checkpoint copies pages and syncs the file. PASSIVE: it never waits for,
        nor blocks, another process. Returns whether it checkpointed.
        """
        try:
            wal_size = os.stat(f"{self.file}-wal").st_size
        except OSError:
            return False
        if wal_size < _WAL_CHECKPOINT_BYTES:
            return False
        with self._side_lock:
            try:
                self._side_connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return True

    def vacuum(self) -> None:
        """Rebuild the file to return free pages to the file system."""
        self._read("VACUUM")
        self.checkpoint()
