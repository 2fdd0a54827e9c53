"""The connection to the queue file: pragmas, schema check, transactions and fork safety.

One connection per process, its use serialised by ``tran_lock``; a second "side" connection
(``_side_lock``) is the worker's, for what must not hold up the callers' appends: reading a
batch before leasing it, and checkpoints. After ``fork()`` the child never uses or closes the
parent's connections (closing one could release locks the parent holds): it parks them and
opens its own on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from ..errors import QueueError
from . import wal_watch
from .diagnosis import translate
from .schema import migrate, refuse_foreign

log = logging.getLogger("durable_analytics")

DURABILITY_MODES = {"normal": "NORMAL", "full": "FULL"}
BUSY_TIMEOUT = 30.0
WAL_KEEP_BYTES = 8 * 1024 * 1024  # a WAL file is truncated to this after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 16384  # 64 MB of 4 KB pages: the fallback when no worker runs
NO_PAGE_CAP = 4294967294  # SQLite's largest max_page_count: no cap
SQLITE_FULL = 13
_PAGE_COUNTS = "SELECT page_count, freelist_count FROM pragma_page_count(), pragma_freelist_count()"

# Stores alive in this process, so that a fork can give each a fresh connection and lock.
_STORES: weakref.WeakSet[Connection] = weakref.WeakSet()
# Connections inherited across fork() are never used or closed by the child: closing one
# could release locks the parent holds. They are parked here for the child's lifetime.
_INHERITED: List[sqlite3.Connection] = []
# The locks the forking thread holds across fork(), per thread: two threads may fork at once.
_FORK_HELD = threading.local()


def _before_fork() -> None:
    """Hold every store's locks across fork(), so that no thread of this process is inside
    SQLite at that moment: a child would inherit SQLite's in-process lock state (or a mutex)
    half-held and wait for it forever, or for busy_timeout, on its first write. The locks are
    re-entrant, so a thread that forks while it holds one (between two statements of its own)
    does not wait for itself."""
    held = []
    for store in sorted(_STORES, key=id):
        for lock in (store.tran_lock, store._side_lock):
            lock.acquire()
            held.append(lock)
    _FORK_HELD.locks = held


def _after_fork_in_parent() -> None:
    for lock in reversed(getattr(_FORK_HELD, "locks", [])):
        lock.release()
    _FORK_HELD.locks = []


def _after_fork_in_child() -> None:
    _FORK_HELD.locks = []
    for store in list(_STORES):
        store._forget_connection()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class Connection:
    """The connections of one store, and the three ways to use them: ``_write`` (one
    ``BEGIN IMMEDIATE`` transaction), ``_snapshot`` (one read transaction) and ``_read``
    (one statement). Every SQLite error leaves as a ``QueueError`` saying what to do."""

    file: Path
    durability: str
    timeout: float
    max_queue_bytes: Optional[int]
    tran_lock: Any
    _conn: Optional[sqlite3.Connection]

    def _start_connections(self) -> None:
        """Set up the locks and open the main connection (the constructor's last step)."""
        self._side: Optional[sqlite3.Connection] = None
        self._side_lock = threading.RLock()
        self._pid = os.getpid()
        self.tran_lock = threading.RLock()
        self._seen_id = 0  # the highest message id this object has seen committed
        self._files: wal_watch.Identity = {}
        self._next_check = 0.0
        self._capped = False  # the main connection's page cap enforces max_queue_bytes
        self._cap_bound: Optional[int] = None  # the max_queue_bytes _capped was decided for
        self._cap_pages = 0
        self._conn = self._connect()
        _STORES.add(self)

    def _new_db_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.file),
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,  # shared by threads, serialised by the locks
        )
        try:
            refuse_foreign(conn, self.file)
        except BaseException:
            conn.close()
            raise
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            # A new file, before the switch to WAL (after it the setting is ignored): free
            # pages can then be given back in small steps (see maintenance).
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={DURABILITY_MODES[self.durability]}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        # Checkpoints (copying the WAL into the file, with an fsync) are the worker's job, on
        # its own connection (see maintain()), so that no call waits for one. This much higher
        # automatic threshold only bounds the WAL of a process that never runs a worker.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = self._new_db_connection()
            try:
                migrate(conn, self.file)
                conn.execute("SELECT id FROM state").fetchone()  # -wal and -shm now exist
                self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                self._apply_cap(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        self._files = wal_watch.identities(self.file)
        return conn

    def _apply_cap(self, conn: sqlite3.Connection) -> None:
        """Cap the file at ``max_queue_bytes`` on the main connection, outside its write
        transactions: SQLite then refuses (``SQLITE_FULL``) an append that would grow the file
        past the bound, exactly, whatever other processes wrote, at no cost per append.

        SQLite never sets a cap below the file's size: a file already past the bound is left
        uncapped, and the appends check the bound in their statement until it shrinks back."""
        bound = self.max_queue_bytes
        pages = 0 if bound is None else bound // self._page_size
        capped = False
        if pages:
            capped = conn.execute(f"PRAGMA max_page_count={pages}").fetchone()[0] == pages
        if not capped and (pages or self._capped):
            conn.execute(f"PRAGMA max_page_count={NO_PAGE_CAP}")
        self._capped, self._cap_bound, self._cap_pages = capped, bound, pages

    def _give_back_past_cap(self, conn: sqlite3.Connection) -> None:
        """In a write transaction that found the file within the cap (and lifted it): give
        back, before it commits, the free pages it leaves past the cap. Free, they would not
        count against the cap of an appender elsewhere, which would fill them past the bound."""
        pages, free = conn.execute(_PAGE_COUNTS).fetchone()
        for _ in range(min(pages - self._cap_pages, free)):
            conn.execute("PRAGMA incremental_vacuum(1)")  # one page per step

    def _restore_cap(self, conn: sqlite3.Connection) -> None:
        """After a write transaction (committed or not): the cap again, if the file allows it.
        Never raises: a connection that cannot take it is left uncapped."""
        try:
            self._apply_cap(conn)
        except sqlite3.Error:
            self._capped = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA max_page_count={NO_PAGE_CAP}")

    def _check_files(self, force: bool = False) -> None:
        """Report (once per loss) that the -wal/-shm files were taken away (see wal_watch);
        then go on with fresh connections on the files now at those paths."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + wal_watch.CHECK_INTERVAL
        with self.tran_lock, self._side_lock:
            if self._conn is None or not wal_watch.lost(
                self._files, wal_watch.identities(self.file)
            ):
                return
            # Close, not park: a connection still open on the lost files keeps this process
            # on them (SQLite shares them between its connections to one file). Closing
            # copies what the lost WAL holds into the file if no other process is using it.
            for conn in (self._conn, self._side):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._conn = self._side = None
            self._record_loss("files removed")

    def _record_loss(self, how: str) -> None:
        """Log the loss as an error and count it in the file, where every process sees it."""
        conn = self._db()
        latest = conn.execute(
            "SELECT MAX(seq, (SELECT COALESCE(MAX(id), 0) FROM messages)) FROM state"
        ).fetchone()[0]
        if latest < self._seen_id:
            how += f"; ids {latest + 1} to {self._seen_id}, committed, are no longer in the file"
        log.error(wal_watch.REPORT, self.file, how)
        conn.execute(
            "UPDATE state SET wal_lost = wal_lost + 1, last_error = ? WHERE id = 0",
            (f"-wal/-shm lost under a running process ({how})",),
        )
        self._seen_id = max(latest, 0)

    def _forget_connection(self) -> None:
        """In a forked child: park the parent's connection and start with fresh locks."""
        for conn in (self._conn, self._side):
            if conn is not None:
                _INHERITED.append(conn)
        self._conn = self._side = None
        self.tran_lock = threading.RLock()
        self._side_lock = threading.RLock()
        self._pid = os.getpid()

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._forget_connection()
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _side_connection(self) -> sqlite3.Connection:
        """The side connection (call with ``_side_lock`` held), opened on first use."""
        if self._pid != os.getpid():
            with self.tran_lock:
                self._db()  # a forked child: forget the parent's connections first
        if self._side is None:
            self._side = self._new_db_connection()
        return self._side

    def close(self) -> None:
        """Close this process's connection. A later call reopens it."""
        with self.tran_lock:
            if self._pid == os.getpid():
                for conn in (self._conn, self._side):
                    if conn is not None:
                        conn.close()
            self._conn = self._side = None

    def __del__(self) -> None:
        try:
            if getattr(self, "_conn", None) is not None and self._pid == os.getpid():
                self._conn.close()  # type: ignore[union-attr]
        except Exception:
            pass

    def _translate(self, exc: sqlite3.Error) -> QueueError:
        return translate(exc, self.file, self.timeout)

    def _write(self, work: Any) -> Any:
        """Run ``work(conn)`` in one ``BEGIN IMMEDIATE`` transaction; commit or roll back.

        Without the page cap: the worker's leases and moves to dead letters, and the appends'
        exact path (which inserts, then applies the overflow policy), may need a page more."""
        with self.tran_lock:
            self._check_files()
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                if self._capped:
                    conn.execute(f"PRAGMA max_page_count={NO_PAGE_CAP}")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._translate(exc) from exc
            try:
                result = work(conn)
                if self._capped:
                    self._give_back_past_cap(conn)
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise
            finally:
                self._restore_cap(conn)

    @contextlib.contextmanager
    def _snapshot(self, side: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction, so that several statements see one state
        of the file. ``side``: the worker's side connection, which the callers' appends never
        wait for; otherwise the main one, under ``tran_lock``."""
        with self._side_lock if side else self.tran_lock:
            try:
                conn = self._side_connection() if side else self._db()
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        with self.tran_lock:
            try:
                return self._db().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
