"""Settling a lease after an upload attempt: accepted (``ack``: deleted), failed
(``release``: ready again with a retry time, or dead after retrying too long) or rejected
(``dead_letter``). Only rows the owner still holds change: a stale taker never overwrites
another's lease."""

from __future__ import annotations

import sqlite3
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .dead_letters import move_dead
from .leases import Leases
from .ranges import runs
from .records import Backoff
from .schema import HIGH_WATER


class Settle(Leases):
    """``ack``, ``release`` and ``dead_letter``."""

    def ack(self, ids: Sequence[int], sent_at: float = float("inf")) -> int:
        """The server accepted these: delete them, count them, and end the run of failures.

        The breaker is closed only by a request sent at or after it opened (``sent_at``, a
        ``time.time()``): a success of a request that left before, from this or another
        process, says nothing about the server now. A batch's ids are consecutive, so this is
        usually one range delete.
        """

        def work(conn: sqlite3.Connection) -> int:
            deleted = 0
            conn.execute(HIGH_WATER)
            for low, high in runs(ids):
                deleted += conn.execute(
                    "DELETE FROM messages WHERE id BETWEEN ? AND ?", (low, high)
                ).rowcount
            self._forget_empty_leases(conn, ids)
            conn.execute("UPDATE state SET delivered = delivered + ? WHERE id = 0", (deleted,))
            conn.execute(
                "UPDATE state SET failures = 0, retry_at = 0, opened = 0 "
                "WHERE id = 0 AND opened <= ?",
                (sent_at,),
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
        give_up_attempts: int = 1,
        count_failure: bool = True,
        wait_until: Optional[float] = None,
        sent_at: float = 0.0,
        now: Optional[float] = None,
    ) -> Tuple[int, List[int]]:
        """Put a failed batch back with its error, its own retry time and maybe the breaker's.

        ``wait_until`` (a ``time.time()``): the batch waits alone until then, in a WAITING lease
        that survives restarts and that any taker reclaims once it expires; ``None`` makes it
        ready at once. ``retry_at`` opens the file-wide breaker: no process sends before then
        (``None`` leaves it alone). When the failing request was sent after the breaker last
        opened (``sent_at``) it sets the new window and opens it now, else it only extends the
        current one (its opening time stays, so the answer of a probe sent since still counts).
        ``count_failure=False`` neither counts an attempt nor a failure (the batch was not the
        problem, e.g. a bad write key). Rows first tried before ``give_up_before`` that failed
        at least ``give_up_attempts`` times are dead-lettered instead (retried for too long).
        Returns ``(released, dead_ids)``. Only rows this owner still holds change.
        """
        moment = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> Tuple[int, List[int]]:
            held = self._held(conn, owner, ids)
            self._count_attempt(conn, held, error, count_failure)
            dead = self._given_up(conn, held, give_up_before, give_up_attempts)
            self._uncover(conn, held)
            if dead:
                move_dead(conn, dead, None, f"gave up retrying: {error}")
            if wait_until is not None:
                self._wait(conn, sorted(set(held) - set(dead)), wait_until, moment)
            conn.execute(
                "UPDATE state SET failures = failures + ?, failed_uploads = failed_uploads + ?, "
                "last_error = ? WHERE id = 0",
                (int(count_failure), int(count_failure), error),
            )
            if retry_at:
                # An older request (sent before ``opened``) must not move ``opened``: the probe
                # on the wire would then look older than the breaker and its answer would
                # neither replace its hold nor close the breaker.
                conn.execute(
                    "UPDATE state SET retry_at = CASE WHEN ? >= opened THEN ? "
                    "ELSE MAX(retry_at, ?) END, "
                    "opened = CASE WHEN ? >= opened THEN ? ELSE opened END WHERE id = 0",
                    (sent_at, retry_at, retry_at, sent_at, moment),
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
        give_up_attempts: int,
    ) -> List[int]:
        """The held rows first tried before ``give_up_before`` and failed at least
        ``give_up_attempts`` times: retried for too long (see ``policy.give_up_rule``)."""
        dead: List[int] = []
        if give_up_before is None or not held:
            return dead
        for low, high in runs(held):
            dead += [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM messages WHERE first_attempt < ? AND attempts >= ? "
                    "AND id BETWEEN ? AND ?",
                    (give_up_before, give_up_attempts, low, high),
                )
            ]
        return dead

    def claim_probe(self, now: float, hold: float, after: int) -> bool:
        """Once the breaker's window has passed: let one request through (True for the taker
        that gets it), holding everyone else back for ``hold`` seconds or until it is answered.
        Only when ``after`` or more uploads failed in a row; otherwise nothing is held."""
        return bool(
            self._write(
                lambda conn: (
                    conn.execute(
                        "UPDATE state SET retry_at = ?, opened = ? "
                        "WHERE id = 0 AND failures >= ? AND retry_at <= ?",
                        (now + hold, now, after, now),
                    ).rowcount
                )
            )
        )

    def end_probe(self, now: float, hold: float) -> None:
        """The probe claimed at ``now`` for ``hold`` seconds was answered without settling the
        breaker (rejected, a configuration error, stopped during a split): end its hold, so
        the next taker probes at once rather than a lease later. Once its answer replaced the
        hold, or closed the breaker, nothing changes."""
        self._write(
            lambda conn: conn.execute(
                "UPDATE state SET retry_at = opened WHERE id = 0 AND opened = ? AND retry_at = ?",
                (now, now + hold),
            )
        )

    def breaker(self, now: float) -> Backoff:
        """The shared retry state, with a clock that stepped back since the breaker opened
        taken into account: its window is moved to start now, its length unchanged."""
        state = self.backoff()
        if state.opened <= now:
            return state
        self._write(
            lambda conn: conn.execute(
                "UPDATE state SET retry_at = ? + (retry_at - opened), opened = ? "
                "WHERE id = 0 AND opened > ?",
                (now, now, now),
            )
        )
        return self.backoff()

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
