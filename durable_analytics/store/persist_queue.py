"""persist-queue's ``SQLiteAckQueue`` interface, mapped onto the store's safe operations."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from ..errors import QueueError
from .appends import Appends
from .maintenance import Maintenance
from .settle import Settle
from .stats import Reads


class PersistQueueSurface(Appends, Settle, Reads, Maintenance):
    """``put``/``get``/``ack``/``nack``/``ack_failed``/``qsize``... as persist-queue names them."""

    _TABLE_NAME = "messages"
    _KEY_COLUMN = "id"

    @property
    def _table_name(self) -> str:
        return "messages"

    def _init(self) -> None:
        """persist-queue's constructor hook: open our connection, not its own."""
        self._start_connections()
        self.total = 0

    def put(self, item: Any) -> Optional[int]:
        """persist-queue ``put``: store any JSON-serialisable item."""
        data = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        return self.append(data)

    def get(
        self, block: bool = True, timeout: Optional[float] = None, id: Any = None, raw: bool = False
    ) -> Any:  # noqa: A002
        """persist-queue ``get``: lease one item for this process (``raw`` adds its ``pqid``)."""
        from persistqueue.exceptions import Empty

        deadline = None if timeout is None else time.monotonic() + timeout
        owner = getattr(self, "_pq_owner", None) or self.new_owner()
        self._pq_owner = owner
        while True:
            leased = self.lease(owner, max_messages=1, max_bytes=1 << 62, lease_seconds=3600)
            if leased is not None:
                row = leased.rows[0]
                item = json.loads(row.data)
                return {"pqid": row.id, "data": item, "timestamp": row.created} if raw else item
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise Empty
            self.put_event.wait(0.05)

    def _pq_id(self, item: Any) -> int:
        if isinstance(item, dict) and "pqid" in item:
            return int(item["pqid"])
        if isinstance(item, int):
            return item
        raise QueueError("pass the raw item returned by get(raw=True), or its pqid")

    def ack(self, ids: Any) -> int:  # type: ignore[override]
        """Takes row ids, or (as persist-queue's ``ack``) one item from ``get(raw=True)``."""
        ids = list(ids) if isinstance(ids, (list, tuple, range)) else [self._pq_id(ids)]
        return super().ack(ids)

    def nack(self, item: Any) -> int:
        return self.release(
            self._pq_owner, [self._pq_id(item)], error="nack", retry_at=0, count_failure=False
        )[0]

    def ack_failed(self, item: Any) -> int:
        return self.dead_letter(
            self._pq_owner, [self._pq_id(item)], http_status=None, reason="ack_failed"
        )

    def resume_unack_tasks(self) -> None:
        """Only expired or abandoned leases are taken back; a live process keeps its lease."""
        self.reclaim()

    def clear_acked_data(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to clear: acknowledged rows are deleted at once."""

    def shrink_disk_usage(self) -> None:
        self.vacuum()

    def qsize(self) -> int:
        return self.stats().ready

    @property
    def size(self) -> int:
        return self.qsize()

    def empty(self) -> bool:
        return self.ready_summary(1)[0] == 0

    def full(self) -> bool:
        with self.tran_lock:
            return self._over_limit(*self._usage(self._db(), 1, 1))
