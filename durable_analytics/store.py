"""The durable queue: the only module that speaks SQL.

Built on persist-queue's ``SQLiteAckQueue`` the way its own FILO and unique queues are: a
subclass that brings its own schema and SQL. What the stock ack queue lacks is added here, and
the parts that are unsafe with several processes on one file are replaced (see
``docs/design.md``):

- every state change runs in one ``BEGIN IMMEDIATE`` transaction and checks the lease it
  acts under, so two takers never hold the same row and a stale taker never overwrites a
  live lease;
- a lease is one row naming an id range (``leases``), not a mark on every leased message: a
  500-message lease writes one small row, and its acknowledgement deletes one id range, so
  the worker holds the write lock (that the application's calls wait for) as briefly as
  possible; ids only grow, so no message appended later can fall inside a leased range;
- opening a file never resets leases: only expired leases, or leases whose owner process is
  gone, are taken back;
- counts, sizes, drops and the shared backoff live in the file, so every process sees the same.

Rows are JSON text (never pickle). A row is ``READY`` until a lease covers it, ``LEASED`` by one
taker for one upload attempt, and then deleted (accepted), ``READY`` again (released with a retry
time) or moved to ``dead_letters`` (rejected by the server: kept with its status and reason
until requeued or purged). Keeping dead letters in their own table leaves the queue table in rowid
order with no index to maintain on append, the path every call takes.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import operator
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from itertools import accumulate, repeat
from itertools import count as count_up
from pathlib import Path
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import persistqueue.serializers.json as json_serializer
from persistqueue.sqlackqueue import SQLiteAckQueue

from .errors import ConfigError, QueueCorrupt, QueueError, QueueFull, QueueLocked
from .paths import prepare_queue_path

__all__ = [
    "Row",
    "DeadLetter",
    "Lease",
    "Stats",
    "Backoff",
    "MessageStore",
    "OVERFLOW_POLICIES",
    "DURABILITY_MODES",
]

log = logging.getLogger("durable_analytics")

SCHEMA_VERSION = 2
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "raise")
DURABILITY_MODES = {"normal": "NORMAL", "full": "FULL"}
DEFAULT_MAX_QUEUE_BYTES = 1_000_000_000
BUSY_TIMEOUT = 30.0
_MAX_ID = (1 << 63) - 1  # SQLite's largest rowid
_DROP_WARNING_INTERVAL = 1.0
_WAL_KEEP_BYTES = 8 * 1024 * 1024  # a WAL file is truncated to this after a checkpoint
_WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024  # the worker checkpoints past this (each one fsyncs)
_WAL_AUTOCHECKPOINT_PAGES = 16384  # 64 MB of 4 KB pages: the fallback when no worker runs
_LARGEST_MESSAGE = 32_768  # bytes one append can add, at most, under the default message limit


class Row(NamedTuple):
    """One stored message, as leased (a tuple: a lease builds hundreds of them at once)."""

    id: int
    data: str
    size: int
    attempts: int
    created: float


@dataclass(frozen=True)
class DeadLetter:
    """A message the server rejected, with why."""

    id: int
    data: str
    http_status: Optional[int]
    reason: Optional[str]
    attempts: int
    created: float
    dead_at: float


@dataclass(frozen=True)
class Lease:
    """Rows one taker holds for one upload attempt."""

    owner: str
    rows: Tuple[Row, ...]
    expires: float

    @property
    def ids(self) -> List[int]:
        return [row.id for row in self.rows]

    @property
    def size(self) -> int:
        return sum(row.size for row in self.rows)


@dataclass(frozen=True)
class Backoff:
    """The shared retry state: no taker sends before ``retry_at`` (a ``time.time()``)."""

    retry_at: float
    failures: int
    last_error: Optional[str]


@dataclass(frozen=True)
class Stats:
    """Counts read from the file itself, identical for every process that asks."""

    path: str
    ready: int
    leased: int
    dead: int
    dropped: int
    delivered: int
    queued_bytes: int
    file_bytes: int
    oldest_age_seconds: Optional[float]
    last_error: Optional[str]
    retry_at: Optional[float]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "ready": self.ready,
            "leased": self.leased,
            "dead": self.dead,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "queued_bytes": self.queued_bytes,
            "bytes": self.file_bytes,
            "oldest_age_seconds": self.oldest_age_seconds,
            "last_error": self.last_error,
            "retry_at": self.retry_at,
        }


_HOST = socket.gethostname()


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # a zombie has exited; only its parent has not reaped it yet
        return "zombie"
    return fields[19].decode() if len(fields) > 19 else None


def _process_alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    now_start = _process_start(pid)
    if now_start == "zombie":
        return False
    return start is None or now_start is None or now_start == start


_PROCESS_PREFIX: Tuple[int, str] = (-1, "")


def _process_prefix() -> str:
    """``host|pid|start-time|``: what every owner token of this process begins with."""
    global _PROCESS_PREFIX
    pid = os.getpid()
    if _PROCESS_PREFIX[0] != pid:
        _PROCESS_PREFIX = (pid, f"{_HOST}|{pid}|{_process_start(pid) or ''}|")
    return _PROCESS_PREFIX[1]


def _owner_token() -> str:
    return _process_prefix() + uuid.uuid4().hex[:8]


# A batch in one row: the statement runs without handing the interpreter lock back and forth
# once per message (a row-by-row fetch of 500 rows lets the application's thread in 500
# times, and each switch costs both threads). Stored JSON never holds a raw control
# character, so char(30) separates the messages; a row that does is read row by row.
_BATCH = (
    "SELECT COUNT(*), group_concat(id), group_concat(size), group_concat(attempts), "
    "group_concat(created), group_concat(data, char(30)) FROM (SELECT id, data, size, "
    "attempts, created FROM messages WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?)"
)
_BATCH_ROWS = (
    "SELECT id, data, size, attempts, created FROM messages "
    "WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?"
)


def _read_batch(
    conn: sqlite3.Connection, low: int, high: int, limit: int, max_bytes: int
) -> List[Row]:
    """The oldest messages with ids in ``low..high``: at most ``limit``, and as many as fit
    ``max_bytes`` counting one separator byte each. A first message larger than the budget
    is taken alone: it is tried (and rejected by the server) rather than left to block the
    queue. Built with C-level calls only: this runs once per batch of up to 500 messages."""
    count, ids, sizes, attempts, created, data = conn.execute(_BATCH, (low, high, limit)).fetchone()
    if not count:
        return []
    texts = data.split("\x1e")
    if len(texts) != count:
        rows = [Row(*row) for row in conn.execute(_BATCH_ROWS, (low, high, limit))]
    else:
        rows = sorted(  # in id order, whatever order the aggregate saw the rows in
            map(
                tuple.__new__,
                repeat(Row),
                zip(
                    map(int, ids.split(",")),
                    texts,
                    map(int, sizes.split(",")),
                    map(int, attempts.split(",")),
                    map(float, created.split(",")),
                ),
            )
        )
    totals = list(map(operator.add, accumulate(map(operator.itemgetter(2), rows)), count_up(1)))
    return rows[: max(1, bisect.bisect_right(totals, max_bytes))]


def _marks(ids: Sequence[int]) -> str:
    return ",".join("?" * len(ids))


def _runs(ids: Iterable[int]) -> List[Tuple[int, int]]:
    """Sorted, distinct ``ids`` as ranges of consecutive integers: a batch is usually one."""
    runs: List[Tuple[int, int]] = []
    for row_id in sorted(set(ids)):
        if runs and runs[-1][1] + 1 == row_id:
            runs[-1] = (runs[-1][0], row_id)
        else:
            runs.append((row_id, row_id))
    return runs


# One row per lease: the messages with ids lo..hi belong to one taker until ``expires``. Leases
# never overlap; a message is READY when no lease covers its id.
_LEASES = """CREATE TABLE IF NOT EXISTS leases (
    lo      INTEGER PRIMARY KEY,
    hi      INTEGER NOT NULL,
    owner   TEXT    NOT NULL,
    expires REAL    NOT NULL,
    started REAL    NOT NULL
)"""

_SCHEMA = (
    # Only READY and LEASED rows live here, so the rowid order is the queue order and an
    # append writes one table page and nothing else: no index, no trigger, no counter row.
    """CREATE TABLE IF NOT EXISTS messages (
        id            INTEGER PRIMARY KEY,
        data          TEXT    NOT NULL,
        size          INTEGER NOT NULL,
        created       REAL    NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        first_attempt REAL,
        error         TEXT
    )""",
    _LEASES,
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id            INTEGER PRIMARY KEY,
        data          TEXT    NOT NULL,
        size          INTEGER NOT NULL,
        created       REAL    NOT NULL,
        attempts      INTEGER NOT NULL,
        http_status   INTEGER,
        reason        TEXT,
        dead_at       REAL    NOT NULL
    )""",
    # What every process must agree on: the shared backoff and the running totals.
    """CREATE TABLE IF NOT EXISTS state (
        id            INTEGER PRIMARY KEY CHECK (id = 0),
        seq           INTEGER NOT NULL DEFAULT 0,
        dropped       INTEGER NOT NULL DEFAULT 0,
        delivered     INTEGER NOT NULL DEFAULT 0,
        retry_at      REAL    NOT NULL DEFAULT 0,
        failures      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT
    )""",
    "INSERT OR IGNORE INTO state (id) VALUES (0)",
)
# How many queued messages the selected leases cover (append ``WHERE`` to select some).
_COVERED = (
    "SELECT COALESCE(SUM((SELECT COUNT(*) FROM messages "
    "WHERE id BETWEEN leases.lo AND leases.hi)), 0) FROM leases"
)
# Schema 1 marked each leased row (status 2, owner, expiry; a partial index over them). Its
# columns stay in an upgraded file, unused; rows it had leased are simply ready again.
_UPGRADE_FROM_1 = (
    _LEASES,
    "UPDATE messages SET status = 1, lease_owner = NULL, lease_expires = NULL WHERE status = 2",
    "DROP INDEX IF EXISTS messages_leased",
)
# Ids only grow, even after the newest row was deleted (SQLite alone would hand its id out
# again): a late ack, a flush mark or a drain snapshot names rows by id, so an id must never
# come back. The high-water mark is written by the deletes (batch operations), so an append
# only reads it and still writes one page.
_INSERT = (
    "INSERT INTO messages (id, data, size, created) VALUES ((SELECT MAX(seq, "
    "(SELECT COALESCE(MAX(id), 0) FROM messages)) + 1 FROM state WHERE id = 0), ?, ?, ?)"
)
_HIGH_WATER = (
    "UPDATE state SET seq = MAX(seq, (SELECT COALESCE(MAX(id), 0) FROM messages)) WHERE id = 0"
)
# Bytes in use: pages holding data. Read from the file header; constant time.
_PAGES_USED = "SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()"

# Stores alive in this process, so that a fork can give each a fresh connection and lock.
_STORES: weakref.WeakSet[MessageStore] = weakref.WeakSet()
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


class MessageStore(SQLiteAckQueue):
    """A crash-safe, multi-process message queue in one SQLite file.

    Thread-safe: one connection per process, its use serialised by a lock. Any number of
    processes may append and lease on the same file at once.
    """

    _TABLE_NAME = "messages"
    _KEY_COLUMN = "id"
    _SQL_CREATE = _SCHEMA[0]

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
        self.file = prepare_queue_path(path, "")
        self.durability = durability
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_messages = max_queue_messages
        self.overflow = overflow
        # The worker's own connection, for what must not hold up the callers' appends: reading
        # a batch before leasing it, and checkpoints. Its lock is also held across fork().
        self._side: Optional[sqlite3.Connection] = None
        self._side_lock = threading.RLock()
        self._unchecked = 0  # appends left before the limits are read again
        self._dropped_unreported = 0
        self._last_drop_warning = 0.0
        self._pid = os.getpid()
        super().__init__(
            str(self.file.parent),
            auto_resume=False,
            name="v1",
            multithreading=True,
            timeout=busy_timeout,
            serializer=json_serializer,
            db_file_name=self.file.name,
        )
        _STORES.add(self)

    @classmethod
    def open(
        cls,
        queue_path: Optional[Union[str, os.PathLike]] = None,
        write_key: str = "",
        **options: Any,
    ) -> MessageStore:
        """Open (creating if needed, 0600 in a 0700 directory) the queue for ``write_key``."""
        return cls(prepare_queue_path(queue_path, write_key), **options)

    # ----------------------------------------------------------------------------------------
    # Connection handling (replaces persist-queue's: pragmas, schema version, fork safety)

    @property
    def _table_name(self) -> str:
        return "messages"

    def _init(self) -> None:
        self.tran_lock = threading.RLock()
        self.put_event = threading.Event()
        self.action_lock = threading.Lock()
        self._conn = self._getter = self._putter = self._connect()
        self._page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        self.total = 0

    def _new_db_connection(
        self, path: Any, multithreading: bool, timeout: float
    ) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.file),
            timeout=timeout,
            isolation_level=None,
            check_same_thread=not multithreading,
        )
        try:
            self._refuse_foreign(conn)
        except BaseException:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={DURABILITY_MODES[self.durability]}")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        # Checkpoints (copying the WAL into the file, with an fsync) are the worker's job, on
        # its own connection (see maintain()), so that no call waits for one. This much higher
        # automatic threshold only bounds the WAL of a process that never runs a worker.
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = self._new_db_connection(self.file, True, self.timeout)
            try:
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        return conn

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """Before anything is written (even the switch to WAL): is this file ours to use?"""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueError(
                f"{self.file} was written by a newer durable-analytics (schema {version}, this "
                f"version reads {SCHEMA_VERSION}): upgrade durable-analytics to read it"
            )
        if version == 0:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if tables - {"messages", "leases", "dead_letters", "state", "sqlite_sequence"}:
                raise QueueCorrupt(
                    f"{self.file} is an SQLite file but not a durable-analytics queue "
                    f"(it has tables {sorted(tables)}); point queue_path at another file"
                )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._refuse_foreign(conn)
                for statement in _SCHEMA:
                    conn.execute(statement)
            elif version == 1:
                for statement in _UPGRADE_FROM_1:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _forget_connection(self) -> None:
        """In a forked child: park the parent's connection and start with fresh locks."""
        for conn in (self._conn, self._side):
            if conn is not None:
                _INHERITED.append(conn)
        self._conn = self._getter = self._putter = self._side = None
        self.tran_lock = threading.RLock()
        self.action_lock = threading.Lock()
        self._side_lock = threading.RLock()
        self._pid = os.getpid()

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._forget_connection()
        if self._conn is None:
            self._conn = self._getter = self._putter = self._connect()
        return self._conn

    def close(self) -> None:
        """Close this process's connection. A later call reopens it."""
        with self.tran_lock:
            if self._pid == os.getpid():
                for conn in (self._conn, self._side):
                    if conn is not None:
                        conn.close()
            self._conn = self._getter = self._putter = self._side = None

    def __del__(self) -> None:
        try:
            if getattr(self, "_conn", None) is not None and self._pid == os.getpid():
                self._conn.close()
        except Exception:
            pass

    def _translate(self, exc: sqlite3.Error) -> QueueError:
        """Map SQLite's errors to ours, each saying what the user can do."""
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return QueueLocked(
                f"{self.file}: another process held the write lock for over "
                f"{self.timeout:g} s ({text}); nothing was lost, try again"
            )
        if "readonly" in lowered or "read-only" in lowered:
            return QueueError(
                f"{self.file} is read-only ({text}): make it and its directory writable, "
                "or choose another location with queue_path="
            )
        if "full" in lowered:
            return QueueError(
                f"{self.file}: the disk is full ({text}); this message was not stored, the "
                "ones already queued are safe. Free space, or lower max_queue_bytes"
            )
        if "unable to open" in lowered or "disk i/o" in lowered:
            return QueueError(
                f"cannot use the queue file {self.file} ({text}): check that the path exists, "
                "that it and its directory are writable (SQLite keeps -wal and -shm files "
                "beside it) and that it is on a local disk"
            )
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return QueueCorrupt(
                f"{self.file} is damaged or not a queue file ({text}). Nothing was deleted: "
                f"move it aside (mv '{self.file}' '{self.file}.broken') and a new queue will "
                "be created; the old file can be inspected with the sqlite3 tool"
            )
        return QueueError(f"{self.file}: {text}")

    def _write(self, work: Any) -> Any:
        """Run ``work(conn)`` in one ``BEGIN IMMEDIATE`` transaction; commit or roll back."""
        with self.tran_lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise

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

    # ----------------------------------------------------------------------------------------
    # Append

    def append(
        self, data: str, size: Optional[int] = None, *, now: Optional[float] = None
    ) -> Optional[int]:
        """Commit one message's JSON; return its row id, or ``None`` if dropped as newest."""
        if size is None:
            size = len(data.encode("utf-8"))
        created = time.time() if now is None else now
        with self.tran_lock:
            conn = self._db()
            try:
                if self._unchecked > 0:
                    self._unchecked -= 1
                    return conn.execute(_INSERT, (data, size, created)).lastrowid
                count, used = self._usage(conn, 1, size)
                if not self._over_limit(count, used):
                    self._unchecked = self._safe_appends(count, used)
                    return conn.execute(_INSERT, (data, size, created)).lastrowid
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        ids = self.append_many([(data, size)], now=created)
        return ids[0] if ids else None

    def append_many(
        self, items: Sequence[Tuple[str, int]], *, now: Optional[float] = None
    ) -> List[int]:
        """Commit many messages in one transaction, applying the overflow policy."""
        created = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> Tuple[List[int], int]:
            incoming = list(items)
            need_count, need_bytes = self._usage(
                conn, len(incoming), sum(size for _, size in incoming)
            )
            dropped = 0
            if self._over_limit(need_count, need_bytes):
                if self.overflow == "raise":
                    raise QueueFull(
                        f"{self.file} is full (limits: {self.max_queue_messages or '-'} "
                        f"messages, {self.max_queue_bytes or '-'} bytes): the message was not "
                        "stored. Run `durable-analytics drain`, raise max_queue_bytes, or "
                        "choose overflow='drop_oldest'"
                    )
                if self.overflow == "drop_newest":
                    while incoming and self._over_limit(need_count, need_bytes):
                        _, size = incoming.pop()
                        need_count -= 1
                        need_bytes -= size
                        dropped += 1
                else:
                    dropped = self._drop_oldest(conn, incoming)
                if dropped:
                    conn.execute("UPDATE state SET dropped = dropped + ? WHERE id = 0", (dropped,))
            ids = [
                conn.execute(_INSERT, (data, size, created)).lastrowid for data, size in incoming
            ]
            return ids, dropped

        ids, dropped = self._write(work)
        if dropped:
            self._warn_dropped(dropped)
        return ids

    def _usage(self, conn: sqlite3.Connection, more: int, more_bytes: int) -> Tuple[int, int]:
        """(messages, bytes) the file would hold with ``more`` messages of ``more_bytes`` added.

        Bytes are the file's pages in use (per-row overhead included), read in constant time.
        Messages are counted only under a message limit: first as the id span (an upper
        bound, one lookup), exactly only when that bound is over the limit.
        """
        used = more_bytes
        if self.max_queue_bytes is not None:
            used += conn.execute(_PAGES_USED).fetchone()[0] * self._page_size
        if self.max_queue_messages is None:
            return more, used
        span, dead = conn.execute(
            "SELECT (SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM messages), "
            "(SELECT COUNT(*) FROM dead_letters)"
        ).fetchone()
        if span + dead + more > self.max_queue_messages:
            span = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        return span + dead + more, used

    def _safe_appends(self, count: int, used: int) -> int:
        """How many appends may skip the limit check: a quarter of the headroom, at most 100,
        so that the limits hold (to within a few messages) even with other processes appending,
        while a queue far from full pays for no check at all on most calls."""
        room = 100
        if self.max_queue_messages is not None:
            room = min(room, (self.max_queue_messages - count) // 4)
        if self.max_queue_bytes is not None:
            room = min(room, (self.max_queue_bytes - used) // (4 * _LARGEST_MESSAGE))
        return max(0, room)

    def _over_limit(self, count: int, total: int) -> bool:
        return (self.max_queue_messages is not None and count > self.max_queue_messages) or (
            self.max_queue_bytes is not None and total > self.max_queue_bytes
        )

    def _drop_oldest(self, conn: sqlite3.Connection, incoming: Sequence[Tuple[str, int]]) -> int:
        """Delete the oldest rows nobody holds a lease on until ``incoming`` fits.

        Waiting messages go first, oldest first; dead letters only when nothing else is left.
        """
        more, more_bytes = len(incoming), sum(size for _, size in incoming)
        dropped = 0
        for table in ("messages", "dead_letters"):
            while True:
                count, used = self._usage(conn, more, more_bytes)
                over_count = count - (self.max_queue_messages or count)
                over_bytes = used - (self.max_queue_bytes or used)
                if over_count <= 0 and over_bytes <= 0:
                    return dropped
                spans = self._free_spans(conn) if table == "messages" else [(0, _MAX_ID)]
                victims: List[int] = []
                freed = 0
                for low, high in spans:
                    for row_id, size in conn.execute(
                        f"SELECT id, size FROM {table} WHERE id BETWEEN ? AND ? "
                        "ORDER BY id LIMIT 1000",
                        (low, high),
                    ):
                        victims.append(row_id)
                        freed += size
                        if len(victims) >= over_count and freed >= over_bytes:
                            break
                    if victims:
                        break
                if not victims:
                    break
                conn.execute(_HIGH_WATER)
                for low, high in _runs(victims):
                    conn.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", (low, high))
                dropped += len(victims)
        return dropped

    def _warn_dropped(self, dropped: int) -> None:
        self._dropped_unreported += dropped
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARNING_INTERVAL:
            log.warning(
                "queue %s is full (overflow=%s): dropped %d message(s); see `durable-analytics "
                "stats` for the total",
                self.file,
                self.overflow,
                self._dropped_unreported,
            )
            self._dropped_unreported = 0
            self._last_drop_warning = now

    # ----------------------------------------------------------------------------------------
    # Lease, ack, release, dead letters

    def new_owner(self) -> str:
        """A token naming one taker: host, pid and process start time, plus a random part."""
        return _owner_token()

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
            rows = seen
            if rows:
                low, high = rows[0].id, rows[-1].id
                taken, present = conn.execute(
                    "SELECT (SELECT COUNT(*) FROM leases WHERE lo <= ? AND hi >= ?), "
                    "(SELECT COUNT(*) FROM messages WHERE id BETWEEN ? AND ?)",
                    (high, low, low, high),
                ).fetchone()
                if taken or present != len(rows):
                    rows = []
            if not rows:
                rows = self._ready_rows(conn, max_messages, max_bytes)
            if not rows:
                return None
            conn.execute(
                "INSERT INTO leases (lo, hi, owner, expires, started) VALUES (?, ?, ?, ?, ?)",
                (rows[0].id, rows[-1].id, owner, expires, moment),
            )
            return Lease(owner, tuple(rows), expires)

        return self._write(work)

    def _ready_rows(self, conn: sqlite3.Connection, limit: int, max_bytes: int) -> List[Row]:
        """The oldest ready messages (see ``_read_batch``): the first free span that has any."""
        for low, high in self._free_spans(conn):
            rows = _read_batch(conn, low, high, limit, max_bytes)
            if rows:
                return rows
        return []

    @staticmethod
    def _free_spans(conn: sqlite3.Connection) -> List[Tuple[int, int]]:
        """The id ranges no lease covers, in order: where the ready messages are."""
        spans = []
        start = 0
        for low, high in conn.execute("SELECT lo, hi FROM leases ORDER BY lo"):
            if low > start:
                spans.append((start, low - 1))
            start = max(start, high + 1)
        spans.append((start, _MAX_ID))
        return spans

    @staticmethod
    def _drop_leases(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> int:
        """Delete the leases matching ``where``; return how many messages they covered."""
        covered = conn.execute(f"{_COVERED} WHERE {where}", params).fetchone()[0]
        conn.execute(f"DELETE FROM leases WHERE {where}", params)
        return int(covered)

    def _reclaim(self, conn: sqlite3.Connection, now: float) -> int:
        """Make ready again the messages of leases that expired or whose owner process is gone."""
        freed = self._drop_leases(conn, "expires < ?", (now,))
        for (owner,) in conn.execute("SELECT DISTINCT owner FROM leases").fetchall():
            host, pid, start, _ = (owner or "|0||").split("|", 3)
            if host != _HOST or not pid.isdigit() or owner.startswith(_process_prefix()):
                continue  # another host's pid cannot be checked; this process is alive
            if not _process_alive(int(pid), start or None):
                freed += self._drop_leases(conn, "owner = ?", (owner,))
        if freed:
            log.info("took back %d message(s) from expired or abandoned leases", freed)
        return freed

    def reclaim(self, now: Optional[float] = None) -> int:
        """Take back expired and abandoned leases now (``lease`` does this itself)."""
        return self._write(lambda conn: self._reclaim(conn, time.time() if now is None else now))

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
            runs: List[List[int]] = [[]]
            for (row_id,) in conn.execute(
                "SELECT id FROM messages WHERE id BETWEEN ? AND ? ORDER BY id", (lease_lo, row[0])
            ).fetchall():
                if row_id in held:
                    runs.append([])
                else:
                    runs[-1].append(row_id)
            for run in runs:
                if run:
                    conn.execute(
                        "INSERT INTO leases (lo, hi, owner, expires, started) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (run[0], run[-1], *row[1:]),
                    )

    def extend(self, owner: str, ids: Sequence[int], lease_seconds: float) -> int:
        """Push a live lease's expiry out, e.g. before another attempt of a split batch.

        Returns how many of ``ids`` the owner still holds (0 if its lease was lost).
        """
        expires = time.time() + lease_seconds

        def work(conn: sqlite3.Connection) -> int:
            held = self._held(conn, owner, ids)
            for lease_lo in {lease for lease, _ in held.values()}:
                conn.execute("UPDATE leases SET expires = ? WHERE lo = ?", (expires, lease_lo))
            return len(held)

        return self._write(work)

    def ack(self, ids: Any) -> int:  # type: ignore[override]
        """The server accepted these: delete them, count them, clear the shared backoff.

        Takes row ids, or (as persist-queue's ``ack``) one item from ``get(raw=True)``. A
        batch's ids are consecutive, so this is usually one range delete.
        """
        ids = list(ids) if isinstance(ids, (list, tuple, range)) else [self._pq_id(ids)]

        def work(conn: sqlite3.Connection) -> int:
            deleted = 0
            conn.execute(_HIGH_WATER)
            for low, high in _runs(ids):
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
            started_at: Dict[float, List[int]] = {}
            for row_id, (_, started) in held.items():
                started_at.setdefault(started, []).append(row_id)
            for started, same in started_at.items():
                for low, high in _runs(same):
                    conn.execute(
                        "UPDATE messages SET first_attempt = COALESCE(first_attempt, ?), "
                        "attempts = attempts + ?, error = ? WHERE id BETWEEN ? AND ?",
                        (started, int(count_failure), error, low, high),
                    )
            dead: List[int] = []
            if give_up_before is not None and held:
                for low, high in _runs(held):
                    dead += [
                        r[0]
                        for r in conn.execute(
                            "SELECT id FROM messages WHERE first_attempt < ? "
                            "AND id BETWEEN ? AND ?",
                            (give_up_before, low, high),
                        )
                    ]
            self._uncover(conn, held)
            if dead:
                self._move_dead(conn, dead, None, f"gave up retrying: {error}")
            conn.execute(
                "UPDATE state SET failures = failures + ?, retry_at = MAX(retry_at, ?), "
                "last_error = ? WHERE id = 0",
                (int(count_failure), retry_at or 0, error),
            )
            return len(held) - len(dead), dead

        return self._write(work)

    def dead_letter(
        self, owner: str, ids: Sequence[int], *, http_status: Optional[int], reason: str
    ) -> int:
        """Move rows this owner holds to the dead letters, with the server's status and reason."""

        def work(conn: sqlite3.Connection) -> int:
            held = list(self._held(conn, owner, ids))
            moved = self._move_dead(conn, held, http_status, reason)
            self._forget_empty_leases(conn, held)
            conn.execute("UPDATE state SET last_error = ? WHERE id = 0", (reason,))
            return moved

        return self._write(work)

    @staticmethod
    def _move_dead(
        conn: sqlite3.Connection,
        ids: Sequence[int],
        http_status: Optional[int],
        reason: str,
    ) -> int:
        """Move these queued rows to the dead letters, with the status and reason."""
        moved = 0
        now = time.time()
        conn.execute(_HIGH_WATER)
        for low, high in _runs(ids):
            moved += conn.execute(
                "INSERT INTO dead_letters (data, size, created, attempts, http_status, "
                "reason, dead_at) SELECT data, size, created, attempts, ?, ?, ? "
                "FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
                (http_status, reason, now, low, high),
            ).rowcount
            conn.execute("DELETE FROM messages WHERE id BETWEEN ? AND ?", (low, high))
        return moved

    @staticmethod
    def _dead_filter(
        ids: Optional[Sequence[int]], older_than: Optional[float]
    ) -> Tuple[str, List[Any]]:
        sql = "1"
        params: List[Any] = []
        if ids is not None:
            sql += f" AND id IN ({_marks(ids)})" if ids else " AND 0"
            params += list(ids)
        if older_than is not None:
            sql += " AND dead_at <= ?"
            params.append(time.time() - older_than)
        return sql, params

    def dead_letters(self, limit: int = 100, offset: int = 0) -> List[DeadLetter]:
        """Rejected messages, oldest first."""
        rows = self._read(
            "SELECT id, data, http_status, reason, attempts, created, dead_at FROM dead_letters "
            "ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [DeadLetter(*row) for row in rows]

    def requeue_dead(
        self, ids: Optional[Sequence[int]] = None, older_than: Optional[float] = None
    ) -> int:
        """Make dead letters ready again (all, some ids, or those dead for ``older_than`` s).

        They join the end of the queue, in the order they died.
        """
        where, params = self._dead_filter(ids, older_than)

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                f"SELECT data, size, created FROM dead_letters WHERE {where} ORDER BY id", params
            ).fetchall()
            for row in rows:
                conn.execute(_INSERT, row)
            conn.execute(f"DELETE FROM dead_letters WHERE {where}", params)
            return len(rows)

        return self._write(work)

    def purge_dead(
        self, ids: Optional[Sequence[int]] = None, older_than: Optional[float] = None
    ) -> int:
        """Delete dead letters for good."""
        where, params = self._dead_filter(ids, older_than)
        return self._write(
            lambda conn: conn.execute(f"DELETE FROM dead_letters WHERE {where}", params).rowcount
        )

    # ----------------------------------------------------------------------------------------
    # What the worker and monitoring read

    def backoff(self) -> Backoff:
        retry_at, failures, last_error = self._read(
            "SELECT retry_at, failures, last_error FROM state"
        )[0]
        return Backoff(retry_at, failures, last_error)

    def ready_summary(self, limit: int) -> Tuple[int, Optional[float]]:
        """How many ready messages, counting no further than ``limit``, and the oldest's time."""
        count = 0
        oldest: Optional[float] = None
        with self._snapshot() as conn:
            for low, high in self._free_spans(conn):
                if oldest is None:
                    first = conn.execute(
                        "SELECT created FROM messages WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1",
                        (low, high),
                    ).fetchone()
                    oldest = first[0] if first else None
                count += conn.execute(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM messages "
                    "WHERE id BETWEEN ? AND ? LIMIT ?)",
                    (low, high, limit - count),
                ).fetchone()[0]
                if count >= limit:
                    break
        return count, oldest

    def next_lease_expiry(self) -> Optional[float]:
        """When the earliest lease held by anyone expires (a taker waits for it)."""
        return self._read("SELECT MIN(expires) FROM leases")[0][0]

    def pending_through(self, last_id: int) -> bool:
        """Whether any message with id <= ``last_id`` is still waiting or in flight."""
        rows = self._read(
            "SELECT 1 FROM messages WHERE id <= ? LIMIT 1",
            (last_id,),
        )
        return bool(rows)

    def last_id(self) -> int:
        return self._read("SELECT COALESCE(MAX(id), 0) FROM messages")[0][0]

    def pending_count(self, last_id: int) -> int:
        """How many messages with id <= ``last_id`` are still waiting or in flight."""
        return self._read(
            "SELECT COUNT(*) FROM messages WHERE id <= ?",
            (last_id,),
        )[0][0]

    def ready_sizes(self, last_id: int) -> List[int]:
        """Sizes of the ready messages with id <= ``last_id``, oldest first (a dry-run drain)."""
        sizes: List[int] = []
        with self._snapshot() as conn:
            for low, high in self._free_spans(conn):
                sizes += [
                    row[0]
                    for row in conn.execute(
                        "SELECT size FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
                        (low, min(high, last_id)),
                    )
                ]
        return sizes

    def stats(self) -> Stats:
        with self._snapshot() as conn:
            dropped, delivered, retry_at, last_error = conn.execute(
                "SELECT dropped, delivered, retry_at, last_error FROM state"
            ).fetchone()
            queued, total = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages"
            ).fetchone()
            dead, dead_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead_letters"
            ).fetchone()
            leased = conn.execute(_COVERED).fetchone()[0]
            oldest = conn.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        file_bytes = sum(
            p.stat().st_size
            for p in (self.file, Path(f"{self.file}-wal"), Path(f"{self.file}-shm"))
            if p.exists()
        )
        return Stats(
            path=str(self.file),
            ready=queued - leased,
            leased=leased,
            dead=dead,
            dropped=dropped,
            delivered=delivered,
            queued_bytes=total + dead_bytes,
            file_bytes=file_bytes,
            oldest_age_seconds=None if oldest is None else max(0.0, time.time() - oldest[0]),
            last_error=last_error,
            retry_at=retry_at or None,
        )

    # ----------------------------------------------------------------------------------------
    # Maintenance

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (bounded disk use)."""
        self._read("PRAGMA wal_checkpoint(TRUNCATE)")

    def maintain(self) -> bool:
        """Checkpoint the WAL once it passes a few MB; called by the worker between batches.

        Runs on a connection of its own and takes no lock of this object, so appends go on
        while the checkpoint copies pages and syncs the file. PASSIVE: it never waits for,
        nor blocks, another process. Returns whether it checkpointed.
        """
        try:
            wal_size = os.stat(f"{self.file}-wal").st_size
        except OSError:
            return False
        if wal_size < _WAL_CHECKPOINT_BYTES:
            return False
        with self._side_lock:
            try:
                self._side_connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return True

    def _side_connection(self) -> sqlite3.Connection:
        """The side connection (call with ``_side_lock`` held), opened on first use."""
        if self._pid != os.getpid():
            with self.tran_lock:
                self._db()  # a forked child: forget the parent's connections first
        if self._side is None:
            self._side = self._new_db_connection(self.file, True, self.timeout)
        return self._side

    def vacuum(self) -> None:
        """Rebuild the file to return free pages to the file system."""
        self._read("VACUUM")
        self.checkpoint()

    # ----------------------------------------------------------------------------------------
    # persist-queue's interface, mapped onto the safe operations above

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

    def shrink_disk_usage(self) -> None:  # type: ignore[override]
        self.vacuum()

    def qsize(self) -> int:
        return self.stats().ready

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.qsize()

    def empty(self) -> bool:
        return self.ready_summary(1)[0] == 0

    def full(self) -> bool:
        with self.tran_lock:
            return self._over_limit(*self._usage(self._db(), 1, 1))
