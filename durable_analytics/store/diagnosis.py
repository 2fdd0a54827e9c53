"""SQLite's errors, translated into ours: each says what happened and what the user can do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import QueueCorrupt, QueueError, QueueLocked


def translate(exc: sqlite3.Error, file: Path, busy_timeout: float) -> QueueError:
    """Map one SQLite error on ``file`` to the matching ``QueueError``."""
    # SQLite's decode error quotes the row's text: a message's content never goes further.
    text = str(exc).split(" with text ", 1)[0]
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return QueueLocked(
            f"{file}: another process held the write lock for over "
            f"{busy_timeout:g} s ({text}); nothing was lost, try again"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return QueueError(
            f"{file} is read-only ({text}): make it and its directory writable, "
            "or choose another location with queue_path="
        )
    if "full" in lowered:
        return QueueError(
            f"{file}: the disk is full ({text}); this message was not stored, the "
            "ones already queued are safe. Free space, or lower max_queue_bytes"
        )
    if "unable to open" in lowered or "disk i/o" in lowered:
        return QueueError(
            f"cannot use the queue file {file} ({text}): check that the path exists, "
            "that it and its directory are writable (SQLite keeps -wal and -shm files "
            "beside it) and that it is on a local disk"
        )
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return QueueCorrupt(
            f"{file} is damaged or not a queue file ({text}). Nothing was deleted: "
            f"move it aside (mv '{file}' '{file}.broken') and a new queue will "
            "be created; the old file can be inspected with the sqlite3 tool"
        )
    return QueueError(f"{file}: {text}")
