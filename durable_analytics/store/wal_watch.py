"""Noticing that the ``-wal`` and ``-shm`` files were deleted or replaced under a running
process (by a clean-up script, or someone "tidying" the directory).

SQLite keeps every commit since the last checkpoint in ``-wal`` and coordinates processes
through ``-shm``. If both are removed while a process has the file open, that process goes on
writing to files nobody else sees, and a process that opens the file afterwards starts from
the last checkpoint: committed messages are lost and nothing fails. SQLite cannot tell; this
module can, two ways:

- the identity (device, inode) of both files is recorded when a connection opens, and
  compared with what is at those paths now (a ``stat`` each, at most every
  ``CHECK_INTERVAL`` seconds on the write path, and on every ``stats()``);
- message ids only grow, so an append whose new id is not above the highest id this process
  has seen committed means the file went back in time.

Either is logged as an error and counted in the file (``state.wal_lost``), so that every
process's ``stats()`` shows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

CHECK_INTERVAL = 0.5  # seconds between two checks on the write path
SUFFIXES = ("-wal", "-shm")

Identity = Dict[str, Optional[Tuple[int, int]]]


def identities(file: Path) -> Identity:
    """(device, inode) of the ``-wal`` and ``-shm`` files of ``file`` (None: absent)."""
    found: Identity = {}
    for suffix in SUFFIXES:
        try:
            info = os.stat(f"{file}{suffix}")
        except OSError:
            found[suffix] = None
        else:
            found[suffix] = (info.st_dev, info.st_ino)
    return found


def lost(recorded: Identity, now: Identity) -> bool:
    """Whether a file recorded when the connection opened is gone or is another file.
    A file that did not exist then and does now is SQLite's own doing: not a loss."""
    return any(
        before is not None and now.get(suffix) != before for suffix, before in recorded.items()
    )


REPORT = (
    "the -wal and/or -shm files of %s were deleted or replaced while this process had the "
    "queue open: messages committed since the last checkpoint may be lost (%s). Never delete "
    "those files while a process uses the queue; see docs/operations.md"
)
