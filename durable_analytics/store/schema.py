"""The queue file's tables, its schema version and the steps that upgrade an older file.

``user_version`` holds the schema version. A new file runs ``CREATE``; a file at version
``v`` runs ``UPGRADES[v]``, ``UPGRADES[v + 1]``, ... up to ``SCHEMA_VERSION``, all in one
``BEGIN IMMEDIATE`` transaction, so every process sees either the old schema or the new one.
To change the schema: add the new tables to ``CREATE``, add ``UPGRADES[SCHEMA_VERSION]`` that
brings a file from the current version to the next, and raise ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Dict, Tuple

from ..errors import QueueCorrupt, QueueError
from .destination import TABLE as _DESTINATION

SCHEMA_VERSION = 7

# One row per lease: the messages with ids lo..hi belong to one taker until ``expires``. Leases
# never overlap; a message is READY when no lease covers its id. A lease owned by WAITING is a
# failed batch waiting for its own retry time (``expires``): reclaimed then, like any lease.
_LEASES = """CREATE TABLE IF NOT EXISTS leases (
    lo      INTEGER PRIMARY KEY,
    hi      INTEGER NOT NULL,
    owner   TEXT    NOT NULL,
    expires REAL    NOT NULL,
    started REAL    NOT NULL
)"""

CREATE: Tuple[str, ...] = (
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
        filtered      INTEGER NOT NULL DEFAULT 0,
        wal_lost      INTEGER NOT NULL DEFAULT 0,
        delivered     INTEGER NOT NULL DEFAULT 0,
        retry_at      REAL    NOT NULL DEFAULT 0,
        failures      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        opened        REAL    NOT NULL DEFAULT 0,
        failed_uploads INTEGER NOT NULL DEFAULT 0
    )""",
    "INSERT OR IGNORE INTO state (id) VALUES (0)",
    # Where the file's messages go, and its bounds: see destination.py.
    _DESTINATION,
)

# UPGRADES[v]: the statements that bring a file from schema v to v + 1.
UPGRADES: Dict[int, Tuple[str, ...]] = {
    # Schema 1 marked each leased row (status 2, owner, expiry; a partial index over them).
    # Its columns stay in an upgraded file, unused; rows it had leased are simply ready again.
    1: (
        _LEASES,
        "UPDATE messages SET status = 1, lease_owner = NULL, lease_expires = NULL WHERE status = 2",
        "DROP INDEX IF EXISTS messages_leased",
    ),
    # Schema 3 counts the messages a before_send hook dropped (never stored, not lost).
    2: ("ALTER TABLE state ADD COLUMN filtered INTEGER NOT NULL DEFAULT 0",),
    # Schema 3 files did not record their destination: the next client to open one claims it.
    3: (_DESTINATION,),
    # Schema 5 records when the file-wide breaker last opened (0: closed), so that a success
    # of a request sent before it opened does not close it, and a clock step is noticed.
    4: ("ALTER TABLE state ADD COLUMN opened REAL NOT NULL DEFAULT 0",),
    # Schema 6 counts the times a process found its -wal/-shm files taken away (wal_watch).
    5: ("ALTER TABLE state ADD COLUMN wal_lost INTEGER NOT NULL DEFAULT 0",),
    # Schema 7 counts failed upload attempts all time: ``failures`` is only the current run
    # (any success resets it), so without this a dashboard cannot see how often uploads fail.
    6: ("ALTER TABLE state ADD COLUMN failed_uploads INTEGER NOT NULL DEFAULT 0",),
}

WAITING = "waiting"  # the owner of a failed batch's lease until its retry time

_OURS = {"messages", "leases", "dead_letters", "state", "destination", "sqlite_sequence"}

# How many queued messages the selected leases cover (append ``WHERE`` to select some).
COVERED = (
    "SELECT COALESCE(SUM((SELECT COUNT(*) FROM messages "
    "WHERE id BETWEEN leases.lo AND leases.hi)), 0) FROM leases"
)
# Ids only grow, even after the newest row was deleted (SQLite alone would hand its id out
# again): a late ack, a flush mark or a drain snapshot names rows by id, so an id must never
# come back. The high-water mark is written by the deletes (batch operations), so an append
# only reads it and still writes one page.
_NEXT_ID = (
    "(SELECT MAX(seq, (SELECT COALESCE(MAX(id), 0) FROM messages)) + 1 FROM state WHERE id = 0)"
)
INSERT = f"INSERT INTO messages (id, data, size, created) VALUES ({_NEXT_ID}, ?, ?, ?)"
# Many rows in one statement (one step of the VM, however many rows): the ids are given,
# counted up from NEXT_ID inside the same write transaction.
NEXT_ID = f"SELECT {_NEXT_ID}"
INSERT_ROWS = "INSERT INTO messages (id, data, size, created) VALUES "
# The same for text given as bytes that may not be UTF-8 (a dead letter requeued as it was).
INSERT_BYTES = (
    f"INSERT INTO messages (id, data, size, created) VALUES ({_NEXT_ID}, CAST(? AS TEXT), ?, ?)"
)
HIGH_WATER = (
    "UPDATE state SET seq = MAX(seq, (SELECT COALESCE(MAX(id), 0) FROM messages)) WHERE id = 0"
)


def refuse_foreign(conn: sqlite3.Connection, file: Path) -> None:
    """Before anything is written (even the switch to WAL): is this file ours to use?"""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise QueueError(
            f"{file} was written by a newer durable-analytics (schema {version}, this "
            f"version reads {SCHEMA_VERSION}): upgrade durable-analytics to read it"
        )
    if version == 0:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if tables - _OURS:
            raise QueueCorrupt(
                f"{file} is an SQLite file but not a durable-analytics queue "
                f"(it has tables {sorted(tables)}); point queue_path at another file"
            )


def migrate(conn: sqlite3.Connection, file: Path) -> None:
    """Create the schema in a new file, or upgrade an older one, in one transaction."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            refuse_foreign(conn, file)
            for statement in CREATE:
                conn.execute(statement)
        else:
            for step in range(version, SCHEMA_VERSION):
                for statement in UPGRADES[step]:
                    conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
