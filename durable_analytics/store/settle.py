"""Settling a lease after an upload attempt: accepted (``ack``: deleted), failed
(``release``: ready again with a retry time, or dead after retrying too long) or rejected
(``dead_letter``). Only rows the owner still holds change: a stale taker never overwrites
another's lease."""

from __future__ import annotations

import sqlite3
from typing import Dict, List, Optional, Sequence, Tuple

from .dead_letters import move_dead
from .leases import Leases
from .ranges import runs
from .schema import HIGH_WATER


class Settle(Leases):
    """``ack``, ``release`` and ``dead_letter``."""

    def ack(self, ids: Sequence[int]) -> int:
        """The server accepted these: delete them, count them, clear the shared backoff.

        A batch's ids are consecutive, so this is usually one range delete.
        """

        def work(conn: sqlite3.Connection) -> int:
            deleted = 0
            conn.execute(HIGH_WATER)
            for low, high in runs(ids):
                deleted += conn.execute(
                    "DELETE FROM messages WHERE id BETWEEN ? AND ?", (low, high)
                ).rowcount
            self._forget_empty_leases(conn, ids)
            conn.execute(
                "UPDATE state SET delivered = delivered + ?, failures = 0, retry_at = 0 "
                "WHERE id = 0",
                (deleted,),
            )
            return deleted

        return self._write(work)

    def release(
        self,
        owner: str,
        ids: Sequence[int],
        *,
        error: str,
        retry_at: Optional[float],
        give_up_before: Optional[float] = None,
        count_failure: bool = True,
    ) -> Tuple[int, List[int]]:
        """Put a failed batch back with its error, and store when anyone may send again.

        ``retry_at`` (a ``time.time()``) becomes the shared backoff of every process on the
        file; ``None`` leaves the backoff alone. ``count_failure=False`` neither counts an
        attempt nor a failure (the batch was not the problem, e.g. a bad write key). Rows
        first tried before ``give_up_before`` are dead-lettered instead (retried for too long).
        Returns ``(released, dead_ids)``. Only rows this owner still holds change.
        """

        def work(conn: sqlite3.Connection) -> Tuple[int, List[int]]:
            held = self._held(conn, owner, ids)
            self._count_attempt(conn, held, error, count_failure)
            dead = self._given_up(conn, held, give_up_before)
            self._uncover(conn, held)
            if dead:
                move_dead(conn, dead, None, f"gave up retrying: {error}")
            conn.execute(
                "UPDATE state SET failures = failures + ?, retry_at = MAX(retry_at, ?), "
                "last_error = ? WHERE id = 0",
                (int(count_failure), retry_at or 0, error),
            )
            return len(held) - len(dead), dead

        return self._write(work)

    @staticmethod
    def _count_attempt(
        conn: sqlite3.Connection,
        held: Dict[int, Tuple[int, float]],
        error: str,
        count_failure: bool,
    ) -> None:
        """Record the attempt on each held row: its error, and when it was first tried."""
        started_at: Dict[float, List[int]] = {}
        for row_id, (_, started) in held.items():
            started_at.setdefault(started, []).append(row_id)
        for started, same in started_at.items():
            for low, high in runs(same):
                conn.execute(
                    "UPDATE messages SET first_attempt = COALESCE(first_attempt, ?), "
                    "attempts = attempts + ?, error = ? WHERE id BETWEEN ? AND ?",
                    (started, int(count_failure), error, low, high),
                )

    @staticmethod
    def _given_up(
        conn: sqlite3.Connection,
        held: Dict[int, Tuple[int, float]],
        give_up_before: Optional[float],
    ) -> List[int]:
        """The held rows first tried before ``give_up_before``: retried for too long."""
        dead: List[int] = []
        if give_up_before is None or not held:
            return dead
        for low, high in runs(held):
            dead += [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM messages WHERE first_attempt < ? AND id BETWEEN ? AND ?",
                    (give_up_before, low, high),
                )
            ]
        return dead

    def dead_letter(
        self, owner: str, ids: Sequence[int], *, http_status: Optional[int], reason: str
    ) -> int:
        """Move rows this owner holds to the dead letters, with the server's status and reason."""

        def work(conn: sqlite3.Connection) -> int:
            held = list(self._held(conn, owner, ids))
            moved = move_dead(conn, held, http_status, reason)
            self._forget_empty_leases(conn, held)
            conn.execute("UPDATE state SET last_error = ? WHERE id = 0", (reason,))
            return moved

        return self._write(work)
