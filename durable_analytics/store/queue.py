"""``MessageStore``: the durable queue, one SQLite file shared by any number of processes.

It is assembled from one class per concept, each in its own module: the connection
(``connection``), appends and bounds (``appends``), leases (``leases``), settling them
(``settle``), dead letters (``dead_letters``), reads and statistics (``stats``), disk upkeep
(``maintenance``). persist-queue's interface over it is ``persist_queue.AckQueue``. See
``docs/design.md``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..errors import ConfigError
from ..limits import DEFAULT_MAX_QUEUE_BYTES
from ..paths import prepare_queue_path
from .appends import OVERFLOW_POLICIES, Appends
from .connection import BUSY_TIMEOUT, DURABILITY_MODES
from .dead_letters import DeadLetters
from .destination import Bounds, Destination, claim, read
from .maintenance import Maintenance
from .settle import Settle
from .stats import Reads

DEFAULT_BOUNDS = Bounds(None, DEFAULT_MAX_QUEUE_BYTES)


def _check_options(
    durability: str, overflow: str, max_queue_bytes: Any, max_queue_messages: Any
) -> None:
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"durability={durability!r}: use 'normal' or 'full'")
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigError(
            f"overflow={overflow!r}: use one of {', '.join(map(repr, OVERFLOW_POLICIES))}"
        )
    for name, limit in (
        ("max_queue_bytes", max_queue_bytes),
        ("max_queue_messages", max_queue_messages),
    ):
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0
        ):
            raise ConfigError(f"{name}={limit!r}: use a positive integer, or None for no limit")


class MessageStore(Appends, Settle, DeadLetters, Reads, Maintenance):
    """A crash-safe, multi-process message queue in one SQLite file.

    Thread-safe: one connection per process, its use serialised by a lock. Any number of
    processes may append and lease on the same file at once.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        *,
        durability: str = "normal",
        max_queue_bytes: Optional[int] = DEFAULT_MAX_QUEUE_BYTES,
        max_queue_messages: Optional[int] = None,
        overflow: str = "drop_oldest",
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        _check_options(durability, overflow, max_queue_bytes, max_queue_messages)
        self.file = prepare_queue_path(path, "")
        self.durability = durability
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_messages = max_queue_messages
        self.overflow = overflow
        self.timeout = busy_timeout
        self._start_appends()
        self._start_connections()

    @classmethod
    def open(
        cls,
        queue_path: Optional[Union[str, os.PathLike]] = None,
        write_key: str = "",
        endpoint: Optional[str] = None,
        **options: Any,
    ) -> MessageStore:
        """Open (creating if needed, 0600 in a 0700 directory) the queue for ``write_key``
        and ``endpoint`` (the default file is per destination)."""
        return cls(prepare_queue_path(queue_path, write_key, endpoint), **options)

    def claim(self, endpoint: Optional[str]) -> None:
        """Bind the file to this endpoint and apply the file's bounds (see ``destination.py``);
        ``ConfigError`` if it belongs to another endpoint."""
        wanted = Bounds(self.max_queue_messages, self.max_queue_bytes)
        bounds = self._write(
            lambda conn: claim(conn, self.file, endpoint, wanted, DEFAULT_BOUNDS, self.overflow)
        )
        self.max_queue_messages, self.max_queue_bytes = bounds

    def destination(self) -> Destination:
        """Where this file's messages go and its bounds, as recorded in the file."""
        with self._snapshot() as conn:
            return read(conn)
