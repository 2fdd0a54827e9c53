"""The durable queue: the only package that speaks SQL.

Rows are JSON text (never pickle). A row is ``READY`` until a lease covers it, ``LEASED`` by one
taker for one upload attempt, and then deleted (accepted), ``READY`` again (released with a retry
time) or moved to ``dead_letters`` (rejected by the server: kept with its status and reason
until requeued or purged). Every state change runs in one ``BEGIN IMMEDIATE`` transaction and
checks the lease it acts under, so two takers never hold the same row and a stale taker never
overwrites a live lease. Counts, sizes, drops and the shared backoff live in the file, so every
process sees the same. ``docs/design.md`` explains the layout and each choice.
"""

from __future__ import annotations

from ..limits import DEFAULT_MAX_QUEUE_BYTES
from .appends import OVERFLOW_POLICIES
from .connection import BUSY_TIMEOUT, DURABILITY_MODES
from .persist_queue import AckQueue
from .queue import MessageStore
from .records import Backoff, DeadLetter, Lease, Row, Stats
from .schema import SCHEMA_VERSION

__all__ = [
    "Row",
    "DeadLetter",
    "Lease",
    "Stats",
    "Backoff",
    "MessageStore",
    "AckQueue",
    "OVERFLOW_POLICIES",
    "DURABILITY_MODES",
    "SCHEMA_VERSION",
    "BUSY_TIMEOUT",
    "DEFAULT_MAX_QUEUE_BYTES",
]
