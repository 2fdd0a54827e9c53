"""persist-queue's ``SQLiteAckQueue`` interface over a ``MessageStore``.

``AckQueue`` is for code written against persist-queue: the same calls, arguments and return
values (``put``/``get``/``ack``/``nack``/``ack_failed``/``update``/``queue``/``qsize``/
``ready_count``/``unack_count``/...), on a queue file that several processes may share
safely. It is composed over the store rather than inherited from ``SQLiteAckQueue``: that
class brings SQL for another table layout and a connection per object, none of which could
run here. What is used of persist-queue is its JSON serializer (items are stored as JSON,
never pickled) and its ``Empty`` exception. docs/design.md lists where the behaviour differs
(acknowledged items are deleted at once; a ``get`` is a lease that a dead process gives back).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Dict, List, Optional, Union

import persistqueue.serializers.json as json_serializer
from persistqueue.exceptions import Empty

from ..errors import QueueError
from .queue import MessageStore
from .ranges import MAX_ID

# persist-queue's status values, as queue() reports them.
READY, UNACK, ACK_FAILED = "1", "2", "9"
_POLL = 0.05  # how often a blocking get() looks at the file (other processes put too)


class AckQueue:
    """A persist-queue ``SQLiteAckQueue`` look-alike on a durable-analytics queue file.

    ``AckQueue(path)`` opens (or creates) the file; ``AckQueue(store=...)`` uses an open
    store. An item taken by ``get()`` is leased for ``lease_seconds`` (persist-queue's
    ``unack``): ``ack`` deletes it, ``nack`` makes it ready again, ``ack_failed`` moves it to
    the dead letters. If this process dies, another takes the item back at once.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike, None] = None,
        *,
        store: Optional[MessageStore] = None,
        lease_seconds: float = 3600.0,
        **store_options: Any,
    ) -> None:
        if (path is None) == (store is None):
            raise QueueError("AckQueue: pass the queue file's path, or store=, not both")
        self.store = store if store is not None else MessageStore.open(path, **store_options)
        self.lease_seconds = lease_seconds
        self._owner = self.store.new_owner()
        self._unack_cache: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self.put_event = threading.Event()

    # -- put and get ---------------------------------------------------------------------

    def put(self, item: Any) -> Optional[int]:
        """Store ``item`` (anything JSON can hold); return its id."""
        data = json_serializer.dumps({"item": item}).decode("utf-8")
        row_id = self.store.append(data)
        self.put_event.set()
        return row_id

    def get(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        id: Optional[Any] = None,  # noqa: A002 - persist-queue's name
        next_in_order: bool = False,
        raw: bool = False,
    ) -> Any:
        """Take the oldest ready item (or the one with ``id``; with ``next_in_order``, the
        first after it); ``raw`` returns ``{"pqid", "data", "timestamp"}``."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        row_id = self._id_of(id, search=False) if id is not None else None
        if next_in_order and row_id is None:
            raise ValueError("'next_in_order' requires the preceding 'id' be specified.")
        low, high = (0, MAX_ID) if row_id is None else (row_id, row_id)
        if next_in_order and row_id is not None:
            low, high = row_id + 1, MAX_ID
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = self.store.lease_first(self._owner, low, high, self.lease_seconds)
            if row is not None:
                item = json.loads(row.data)["item"]
                with self._lock:
                    self._unack_cache[row.id] = item
                return {"pqid": row.id, "data": item, "timestamp": row.created} if raw else item
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise Empty
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            self.put_event.clear()
            self.put_event.wait(max(0.0, wait))

    def get_nowait(self, id: Optional[Any] = None, raw: bool = False) -> Any:  # noqa: A002
        return self.get(block=False, id=id, raw=raw)

    # -- settling what get() returned ------------------------------------------------------

    def _id_of(self, item: Any, search: bool = True) -> Optional[int]:
        """persist-queue's rule: a raw item's ``pqid``, the very object ``get`` returned, or
        (given as ``id=``) an int or a numeric string."""
        if isinstance(item, dict) and "pqid" in item:
            return int(item["pqid"])
        if search:
            with self._lock:
                for key, value in self._unack_cache.items():
                    if value is item:
                        return key
            return None
        if isinstance(item, int) or (isinstance(item, str) and item.isnumeric()):
            return int(item)
        return None

    def _settled(self, item: Any, id: Optional[Any]) -> Optional[int]:  # noqa: A002
        if id is not None and item is not None:
            raise ValueError("Specify an id or an item, not both.")
        if id is None and item is None:
            raise ValueError("Specify an id or an item.")
        row_id = self._id_of(id, search=False) if id is not None else self._id_of(item)
        if row_id is not None:
            with self._lock:
                self._unack_cache.pop(row_id, None)
        return row_id

    def ack(self, item: Any = None, id: Optional[Any] = None) -> Optional[int]:  # noqa: A002
        """Done with it: the item is deleted. Returns its id."""
        row_id = self._settled(item, id)
        if row_id is not None:
            self.store.ack([row_id])
        return row_id

    def nack(self, item: Any = None, id: Optional[Any] = None) -> Optional[int]:  # noqa: A002
        """Not done: the item is ready again, first in line. Returns its id."""
        row_id = self._settled(item, id)
        if row_id is not None:
            self.store.release(
                self._owner, [row_id], error="nack", retry_at=None, count_failure=False
            )
        return row_id

    def ack_failed(self, item: Any = None, id: Optional[Any] = None) -> Optional[int]:  # noqa: A002
        """Failed for good: the item moves to the dead letters. Returns its id."""
        row_id = self._settled(item, id)
        if row_id is not None:
            self.store.dead_letter(self._owner, [row_id], http_status=None, reason="ack_failed")
        return row_id

    def update(self, item: Any, id: Optional[Any] = None) -> Optional[int]:  # noqa: A002
        """Replace a stored item (``item`` a raw item, or ``id=`` with the new value)."""
        row_id = None
        if isinstance(item, dict) and "pqid" in item:
            row_id, item = int(item["pqid"]), item.get("data")
        if id is not None:
            row_id = self._id_of(id, search=False)
        if row_id is None:
            raise ValueError("Provide an id or raw item")
        data = json_serializer.dumps({"item": item}).decode("utf-8")
        self.store.replace(row_id, data)
        return row_id

    # -- what the queue holds ----------------------------------------------------------------

    def queue(self) -> List[Dict[str, Any]]:
        """Every item with its id, timestamp and status ("1" ready, "2" unack, "9" failed)."""
        return [
            {"id": row_id, "data": json.loads(data)["item"], "timestamp": created, "status": status}
            for row_id, data, created, status in self.store.rows_with_status()
        ]

    def ready_count(self) -> int:
        return self.store.stats().ready

    def unack_count(self) -> int:
        return self.store.stats().leased

    def acked_count(self) -> int:
        """Always 0: an acknowledged item is deleted in the same transaction."""
        return 0

    def ack_failed_count(self) -> int:
        return self.store.stats().dead

    @property
    def size(self) -> int:
        return self.ready_count()

    @property
    def total(self) -> int:
        return self.ready_count()

    def qsize(self) -> int:
        return self.ready_count()

    def active_size(self) -> int:
        with self._lock:
            return self.ready_count() + len(self._unack_cache)

    def __len__(self) -> int:
        return self.ready_count()

    def empty(self) -> bool:
        return self.store.ready_summary(1)[0] == 0

    def full(self) -> bool:
        return self.store.full()

    # -- upkeep --------------------------------------------------------------------------------

    def resume_unack_tasks(self) -> None:
        """Items of expired leases and of processes that are gone are ready again; a live
        process keeps what it took (persist-queue would take those back too)."""
        self.store.reclaim()

    def clear_acked_data(
        self, max_delete: int = 1000, keep_latest: int = 1000, clear_ack_failed: bool = False
    ) -> None:
        """Acknowledged items are already gone; ``clear_ack_failed`` deletes failed ones,
        oldest first, keeping the latest ``keep_latest``, at most ``max_delete`` of them."""
        if not clear_ack_failed:
            return
        dead = [letter.id for letter in self.store.dead_letters(limit=-1)]
        doomed = dead[: max(0, len(dead) - keep_latest)] if keep_latest > 0 else dead
        if max_delete and max_delete > 0:
            doomed = doomed[-max_delete:]
        if doomed:
            self.store.purge_dead(doomed)

    def shrink_disk_usage(self) -> None:
        self.store.vacuum()

    def task_done(self) -> None:
        """Nothing to do: every call commits before it returns."""

    def close(self) -> None:
        self.store.close()
