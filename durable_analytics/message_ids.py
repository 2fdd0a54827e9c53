"""Message ids: random (version 4) UUIDs, handed out without a system call per message.

Apart from the messages because the pool has its own rules (no seeded ``random``, no id shared
between threads, or between a parent and its forked child).
"""

from __future__ import annotations

import os
from typing import List

__all__ = ["new_message_id"]

# Message ids are random (version 4) UUIDs from os.urandom, drawn 256 at a time: one system
# call per call would also hand the interpreter lock to the delivery thread once more per call.
# Not the ``random`` module: an application that seeds it would repeat our ids (and the server
# drops repeated ids). ``list.pop`` is atomic, so threads never share an id; a forked child
# empties the pool it inherited, or parent and child would hand out the same ids.
_ID_POOL: List[str] = []
_ID_BATCH = 256
os.register_at_fork(after_in_child=_ID_POOL.clear)


def _fill_id_pool() -> None:
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    for i in range(0, len(raw), 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    _ID_POOL.extend(
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    )


def new_message_id() -> str:
    """A random (version 4) UUID, as text."""
    try:
        return _ID_POOL.pop()
    except IndexError:
        _fill_id_pool()
        return new_message_id()
