"""SQLite's errors, translated into ours: each says what happened and what the user can do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Optional

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
    if "full" in lowered or (
        ("unable to open" in lowered or "disk i/o" in lowered) and _disk_is_full(file)
    ):
        return QueueError(
            f"the disk holding {file} is full ({_free(file)}; SQLite: {text}). Nothing "
            "already queued was lost; what was being written was not (a new message is "
            "not stored). Free space on that disk, or set queue_path to a disk with room; "
            "max_queue_bytes keeps the queue under a size you choose"
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


# SQLite says "disk I/O error" when it cannot grow its -shm file, and "unable to open" when it
# cannot create it: on a disk with less than this left, that is a full disk, not a bad path.
_NEARLY_FULL_BYTES = 1024 * 1024


def _free_bytes(file: Path) -> Optional[int]:
    """Bytes an unprivileged writer may still use on the file system of ``file``."""
    for place in (file.parent, file.parent.parent):
        try:
            found = os.statvfs(place)
        except OSError:
            continue
        return found.f_bavail * found.f_frsize
    return None


def _disk_is_full(file: Path) -> bool:
    free = _free_bytes(file)
    return free is not None and free < _NEARLY_FULL_BYTES


def _free(file: Path) -> str:
    free = _free_bytes(file)
    return "free space unknown" if free is None else f"{free:,} bytes free"
