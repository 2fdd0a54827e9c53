"""Process identity: who holds a lease, and whether that process still exists.

An owner token is ``host|pid|start-time|random``. The start time (the kernel's, from
``/proc``) tells a live owner from an unrelated process that was later given the same pid.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Optional, Tuple

HOST = socket.gethostname()


def process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # a zombie has exited; only its parent has not reaped it yet
        return "zombie"
    return fields[19].decode() if len(fields) > 19 else None


def process_alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    now_start = process_start(pid)
    if now_start == "zombie":
        return False
    return start is None or now_start is None or now_start == start


_PROCESS_PREFIX: Tuple[int, str] = (-1, "")


def process_prefix() -> str:
    """``host|pid|start-time|``: what every owner token of this process begins with."""
    global _PROCESS_PREFIX
    pid = os.getpid()
    if _PROCESS_PREFIX[0] != pid:
        _PROCESS_PREFIX = (pid, f"{HOST}|{pid}|{process_start(pid) or ''}|")
    return _PROCESS_PREFIX[1]


def owner_token() -> str:
    """A token naming one taker: host, pid and process start time, plus a random part."""
    return process_prefix() + uuid.uuid4().hex[:8]
