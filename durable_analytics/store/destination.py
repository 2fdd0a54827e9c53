"""Which destination a queue file belongs to, and the bounds that belong to the file.

A message is only ever sent where the client that recorded it sends: the file remembers the
endpoint of the first client that claimed it, and a client for another endpoint is refused
with an error that says what to do. The write key is not part of it: a client with the key
fixed must still deliver what one with a wrong key recorded (the server refused those with
401, and they were kept for that). The file's size bounds are part of the same record: one
client's bound applies to every client of the file (never silently to what another
recorded), is visible in ``stats``, and a client asking for a different bound is refused
with ``drop_oldest`` (others' messages would be deleted) and only told otherwise (its stricter
bound then only refuses its own new messages).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import NamedTuple, Optional

from ..errors import ConfigError

__all__ = ["Bounds", "Destination", "claim", "read", "TABLE"]

log = logging.getLogger("durable_analytics")

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
    overflow: str,
) -> Bounds:
    """Record (first claim) or check this client's endpoint and bounds; return the bounds this
    client's appends obey. Call inside a write transaction.

    The first client's bounds are the file's. A later client that asks for nothing in
    particular (``wanted == defaults``) takes them. One that asks for other bounds is told
    (a warning) and obeys the stricter of the two for its own appends: with ``drop_newest`` or
    ``raise`` that only ever refuses its own new messages. With ``drop_oldest`` a stricter
    bound would delete what other clients recorded, so it is refused.

    Raises :class:`ConfigError` for another endpoint, or a stricter bound with ``drop_oldest``.
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
    if bounds is None:
        bounds = wanted
    conn.execute(
        "INSERT INTO destination (id, endpoint, bounded, max_queue_messages, max_queue_bytes) "
        "VALUES (0, ?, 1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "endpoint = COALESCE(endpoint, excluded.endpoint), bounded = 1, "
        "max_queue_messages = excluded.max_queue_messages, "
        "max_queue_bytes = excluded.max_queue_bytes",
        (endpoint, bounds.messages, bounds.bytes),
    )
    if wanted in (bounds, defaults):
        return bounds
    effective = Bounds(
        _stricter(wanted.messages, bounds.messages), _stricter(wanted.bytes, bounds.bytes)
    )
    described = (
        f"{file} is bounded at max_queue_messages={bounds.messages}, "
        f"max_queue_bytes={bounds.bytes} (by the client that created it); this client asks for "
        f"max_queue_messages={wanted.messages}, max_queue_bytes={wanted.bytes}"
    )
    if effective != bounds and overflow == "drop_oldest":
        raise ConfigError(
            f"{described}, with overflow='drop_oldest', which would delete messages other "
            "clients recorded. Pass the file's bounds, overflow='drop_newest', or another "
            "queue_path"
        )
    log.warning(
        "%s: the file's bounds stay; this client's own calls obey max_queue_messages=%s, "
        "max_queue_bytes=%s",
        described,
        effective.messages,
        effective.bytes,
    )
    return effective


def _stricter(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None or b is None:
        return b if a is None else a
    return min(a, b)
