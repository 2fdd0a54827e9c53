"""Which destination a queue file belongs to, and the bounds that belong to the file.

A message is only ever sent where the client that recorded it sends: the file remembers the
endpoint of the first client that claimed it, and a client for another endpoint is refused
with an error that says what to do. The write key is not part of it: a client with the key
fixed must still deliver what one with a wrong key recorded (the server refused those with
401, and they were kept for that). The file's size bounds are part of the same record: one
client's bound applies to every client of the file (never silently to what another
recorded), is visible in ``stats``, and a client asking for a different bound is refused
instead of quietly changing it.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple, Optional

from ..errors import ConfigError

__all__ = ["Bounds", "Destination", "claim", "read", "TABLE"]

TABLE = """CREATE TABLE IF NOT EXISTS destination (
    id                  INTEGER PRIMARY KEY CHECK (id = 0),
    endpoint            TEXT,
    bounded             INTEGER NOT NULL DEFAULT 0,
    max_queue_messages  INTEGER,
    max_queue_bytes     INTEGER
)"""


class Bounds(NamedTuple):
    """``max_queue_messages`` and ``max_queue_bytes`` (``None``: no limit)."""

    messages: Optional[int]
    bytes: Optional[int]


class Destination(NamedTuple):
    """What a file records: where its messages go, and its bounds (``None`` if unclaimed)."""

    endpoint: Optional[str]
    bounds: Optional[Bounds]


def read(conn: sqlite3.Connection) -> Destination:
    row = conn.execute(
        "SELECT endpoint, bounded, max_queue_messages, max_queue_bytes "
        "FROM destination WHERE id = 0"
    ).fetchone()
    if row is None:
        return Destination(None, None)
    endpoint, bounded, messages, size = row
    return Destination(endpoint, Bounds(messages, size) if bounded else None)


def claim(
    conn: sqlite3.Connection,
    file: object,
    endpoint: Optional[str],
    wanted: Bounds,
    defaults: Bounds,
) -> Bounds:
    """Record (first claim) or check this client's destination and bounds; return the bounds
    that apply. Call inside a write transaction. ``wanted`` equal to ``defaults`` means the
    client asked for nothing in particular: it takes the file's bounds.

    Raises :class:`ConfigError` for another endpoint, or other bounds.
    """
    current = read(conn)
    if endpoint is not None and current.endpoint not in (None, endpoint):
        raise ConfigError(
            f"{file} holds messages for {current.endpoint}, not for {endpoint}: a queue file "
            "belongs to one destination. Use another queue_path (the default file is per "
            "endpoint), or send its messages with `durable-analytics drain --queue "
            f"{file} --endpoint {current.endpoint}`"
        )
    bounds = current.bounds
    if bounds is None or wanted == bounds:
        bounds = wanted
    elif wanted != defaults:
        raise ConfigError(
            f"{file} is bounded at max_queue_messages={bounds.messages}, "
            f"max_queue_bytes={bounds.bytes} by the client that created it; this client asks "
            f"for max_queue_messages={wanted.messages}, max_queue_bytes={wanted.bytes}. A bound "
            "belongs to the file (it would apply to every client's messages): pass the file's "
            "bounds, or use another queue_path"
        )
    conn.execute(
        "INSERT INTO destination (id, endpoint, bounded, max_queue_messages, max_queue_bytes) "
        "VALUES (0, ?, 1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "endpoint = COALESCE(endpoint, excluded.endpoint), bounded = 1, "
        "max_queue_messages = excluded.max_queue_messages, "
        "max_queue_bytes = excluded.max_queue_bytes",
        (endpoint, bounds.messages, bounds.bytes),
    )
    return bounds
