"""Leases: which taker holds which messages for one upload attempt, and taking them back.

A lease is one row naming an id range (table ``leases``), not a mark on every leased message:
a 500-message lease writes one small row. Ids only grow, so no message appended later can fall
inside a leased range. Only expired leases, or leases whose owner process is gone, are taken
back; opening a file never resets them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import identity
from .batches import Batch, read_batch, ready_batch
from .connection import Connection
from .dead_letters import move_dead
from .ranges import MAX_ID, free_spans
from .records import Lease, Row
from .schema import COVERED, WAITING

log = logging.getLogger("durable_analytics")


class Leases(Connection):
    """``lease``, ``extend`` and ``reclaim``, and the helpers settling a lease relies on."""

    def new_owner(self) -> str:
        """A token naming one taker: host, pid and process start time, plus a random part."""
        return identity.owner_token()

    def lease(
        self,
        owner: str,
        *,
        max_messages: int,
        max_bytes: int,
        lease_seconds: float,
        now: Optional[float] = None,
    ) -> Optional[Lease]:
        """Take the oldest ready messages that fit both limits; ``None`` if there are none.

        The byte budget counts each message plus one separator byte. A single message larger
        than the budget is still leased alone, so it can be tried (and rejected) rather than
        block the queue. The lease is one row naming the range of ids taken: nothing is
        written to the messages themselves.
        """
        identity.check_owner(owner)
        moment = time.time() if now is None else now
        expires = moment + lease_seconds
        # Read the batch first on the side connection, outside the write lock the callers'
        # appends wait for; the lease transaction then only checks that nobody took or settled
        # any of it meanwhile (no id can appear inside a range: ids only grow) and writes one
        # row. If the check fails, the batch is read again inside the transaction.
        with self._snapshot(side=True) as conn:
            seen = self._ready_rows(conn, max_messages, max_bytes)

        def work(conn: sqlite3.Connection) -> Optional[Lease]:
            self._reclaim(conn, moment)
            batch = seen if self._untouched(conn, seen) else None
            while True:
                if batch is None:
                    batch = self._ready_rows(conn, max_messages, max_bytes)
                if batch.bad:
                    self._quarantine(conn, batch.bad)
                if batch.rows or not batch.bad:
                    break
                batch = None  # only unreadable rows: they are gone now, read on
            rows = batch.rows
            if not rows:
                return None
            conn.execute(
                "INSERT INTO leases (lo, hi, owner, expires, started) VALUES (?, ?, ?, ?, ?)",
                (rows[0].id, rows[-1].id, owner, expires, moment),
            )
            return Lease(owner, tuple(rows), expires)

        return self._write(work)

    def lease_first(self, owner: str, low: int, high: int, lease_seconds: float) -> Optional[Row]:
        """Lease the first ready message with an id in ``low..high`` alone (persist-queue's
        ``get``, which may name an id); ``None`` if there is none."""
        identity.check_owner(owner)
        moment = time.time()

        def work(conn: sqlite3.Connection) -> Optional[Row]:
            self._reclaim(conn, moment)
            for span_low, span_high in free_spans(conn):
                start, end = max(low, span_low), min(high, span_high)
                if start > end:
                    continue
                batch = read_batch(conn, start, end, 1, MAX_ID)
                if batch.bad:
                    self._quarantine(conn, batch.bad)
                if batch.rows:
                    row = batch.rows[0]
                    conn.execute(
                        "INSERT INTO leases (lo, hi, owner, expires, started) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (row.id, row.id, owner, moment + lease_seconds, moment),
                    )
                    return row
            return None

        return self._write(work)

    @staticmethod
    def _untouched(conn: sqlite3.Connection, batch: Batch) -> bool:
        """Whether ``batch``, read before the write lock, is still all queued and unleased."""
        span = batch.span
        if span is None:
            return False
        low, high = span
        taken, present = conn.execute(
            "SELECT (SELECT COUNT(*) FROM leases WHERE lo <= ? AND hi >= ?), "
            "(SELECT COUNT(*) FROM messages WHERE id BETWEEN ? AND ?)",
            (high, low, low, high),
        ).fetchone()
        return not taken and present == len(batch.rows) + len(batch.bad)

    def _ready_rows(self, conn: sqlite3.Connection, limit: int, max_bytes: int) -> Batch:
        return ready_batch(conn, limit, max_bytes)

    @staticmethod
    def _quarantine(conn: sqlite3.Connection, bad: List[Tuple[int, str]]) -> None:
        """Move rows that cannot be handed out to the dead letters, each with its reason."""
        for row_id, reason in bad:
            move_dead(conn, [row_id], None, reason)
            log.error(
                "%s; it was moved to the dead letters (`durable-analytics dead-letters list`) "
                "and the rest of the queue goes on",
                reason,
            )

    @staticmethod
    def _drop_leases(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> int:
        """Delete the leases matching ``where``; return how many messages they covered."""
        covered = conn.execute(f"{COVERED} WHERE {where}", params).fetchone()[0]
        conn.execute(f"DELETE FROM leases WHERE {where}", params)
        return int(covered)

    def _reclaim(self, conn: sqlite3.Connection, now: float) -> int:
        """Make ready again the messages of leases that expired or whose owner process is gone."""
        freed = self._drop_leases(conn, "expires < ?", (now,))
        mine = identity.process_prefix()
        for (owner,) in conn.execute("SELECT DISTINCT owner FROM leases").fetchall():
            taker = identity.parse_owner(owner)
            if taker is None or taker.host != identity.HOST or owner.startswith(mine):
                # Not a token (written by another tool): it waits for its expiry. Another
                # host's pid cannot be checked; this process is alive.
                continue
            if not identity.process_alive(taker.pid, taker.start):
                freed += self._drop_leases(conn, "owner = ?", (owner,))
        if freed:
            log.info("took back %d message(s) from expired or abandoned leases", freed)
        return freed

    def reclaim(self, now: Optional[float] = None) -> int:
        """Take back expired and abandoned leases now (``lease`` does this itself).

        A lease that started "in the future" means the clock stepped back: it is first moved to
        start now with its length unchanged, so a 2 s retry wait never becomes an hour's."""
        moment = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> int:
            conn.execute(
                "UPDATE leases SET expires = ? + (expires - started), started = ? "
                "WHERE started > ?",
                (moment, moment, moment),
            )
            return self._reclaim(conn, moment)

        return self._write(work)

    @staticmethod
    def _held(
        conn: sqlite3.Connection, owner: str, ids: Sequence[int]
    ) -> Dict[int, Tuple[int, float]]:
        """Which of ``ids`` are still queued under a lease of ``owner``: id -> (lease, start)."""
        wanted = set(ids)
        if not wanted:
            return {}
        held: Dict[int, Tuple[int, float]] = {}
        for low, high, started in conn.execute(
            "SELECT lo, hi, started FROM leases WHERE owner = ? AND lo <= ? AND hi >= ?",
            (owner, max(wanted), min(wanted)),
        ).fetchall():
            for (row_id,) in conn.execute(
                "SELECT id FROM messages WHERE id BETWEEN ? AND ?", (low, high)
            ):
                if row_id in wanted:
                    held[row_id] = (low, started)
        return held

    @staticmethod
    def _forget_empty_leases(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        """Delete the leases around ``ids`` that no longer cover any queued message."""
        if ids:
            conn.execute(
                "DELETE FROM leases WHERE lo <= ? AND hi >= ? AND NOT EXISTS "
                "(SELECT 1 FROM messages WHERE id BETWEEN leases.lo AND leases.hi)",
                (max(ids), min(ids)),
            )

    @staticmethod
    def _uncover(conn: sqlite3.Connection, held: Dict[int, Tuple[int, float]]) -> None:
        """Take the ``held`` messages out of their leases (they are ready again).

        A lease keeps covering its other messages: it is cut into the runs between them.
        """
        for lease_lo in {lease for lease, _ in held.values()}:
            row = conn.execute(
                "SELECT hi, owner, expires, started FROM leases WHERE lo = ?", (lease_lo,)
            ).fetchone()
            conn.execute("DELETE FROM leases WHERE lo = ?", (lease_lo,))
            kept: List[List[int]] = [[]]
            for (row_id,) in conn.execute(
                "SELECT id FROM messages WHERE id BETWEEN ? AND ? ORDER BY id", (lease_lo, row[0])
            ).fetchall():
                if row_id in held:
                    kept.append([])
                else:
                    kept[-1].append(row_id)
            for run in kept:
                if run:
                    conn.execute(
                        "INSERT INTO leases (lo, hi, owner, expires, started) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (run[0], run[-1], *row[1:]),
                    )

    @staticmethod
    def _wait(conn: sqlite3.Connection, ids: Sequence[int], until: float, now: float) -> None:
        """Cover the (uncovered) messages ``ids`` with WAITING leases until ``until``: each run of
        them that no other message interrupts becomes one lease row."""
        wanted = set(ids)
        if not wanted:
            return
        run: List[int] = []
        found = conn.execute(
            "SELECT id FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
            (min(wanted), max(wanted)),
        ).fetchall()
        for (row_id,) in [*found, (None,)]:
            if row_id in wanted:
                run.append(row_id)
                continue
            if run:
                conn.execute(
                    "INSERT INTO leases (lo, hi, owner, expires, started) VALUES (?, ?, ?, ?, ?)",
                    (run[0], run[-1], WAITING, until, now),
                )
            run = []

    def extend(
        self, owner: str, ids: Sequence[int], lease_seconds: float, now: Optional[float] = None
    ) -> int:
        """Push a live lease's expiry out, e.g. before another attempt of a split batch.

        Returns how many of ``ids`` the owner still holds (0 if its lease was lost).
        """
        expires = (time.time() if now is None else now) + lease_seconds

        def work(conn: sqlite3.Connection) -> int:
            held = self._held(conn, owner, ids)
            for lease_lo in {lease for lease, _ in held.values()}:
                conn.execute("UPDATE leases SET expires = ? WHERE lo = ?", (expires, lease_lo))
            return len(held)

        return self._write(work)
