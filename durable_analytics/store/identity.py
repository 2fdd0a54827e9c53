"""Process identity: who holds a lease, and whether that process still exists.

An owner token is ``host|pid|start-time|random``. The start time (the kernel's, from
``/proc``) tells a live owner from an unrelated process that was later given the same pid.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from typing import Any, NamedTuple, Optional, Tuple

from ..errors import ConfigError

HOST = socket.gethostname()
_TOKEN = re.compile(r"([^|]*)\|([0-9]+)\|([0-9]*)\|[0-9a-f]{8}")


class Owner(NamedTuple):
    """What an owner token says: the host and pid of the taker and the pid's start time."""

    host: str
    pid: int
    start: Optional[str]


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


def parse_owner(token: Any) -> Optional[Owner]:
    """The parts of an owner token, or ``None`` if ``token`` is not one."""
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        return None
    host, pid, start = match.groups()
    return Owner(host, int(pid), start or None)


def check_owner(token: Any) -> str:
    """``token`` if it came from ``owner_token()``; a clear error otherwise (an owner the
    store cannot check would hold its messages until the lease expires)."""
    if parse_owner(token) is None:
        raise ConfigError(
            f"lease owner {str(token)[:80]!r} is not an owner token: pass the value of "
            "store.new_owner() (host|pid|start-time|random), made once per taker"
        )
    return token
