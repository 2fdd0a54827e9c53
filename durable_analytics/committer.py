"""Group commit: calls that arrive while a commit is running share the next one.

Every call still gets its own answer (a row id, ``None`` when dropped as newest, or its own
exception), but with many threads recording at once each commit carries every message that
arrived during the one before it, instead of each call paying a transaction of its own.

``GroupCommitter`` (``durability="normal"`` or ``"full"``): a call returns only once its
message is committed. The first caller to find no commit running leads: it commits its own
message at once (a lone caller waits for nothing), and on finishing hands the lead to the
first caller that queued meanwhile, who commits everything queued by then in one transaction
(leader/follower, as databases do).

``BufferedCommitter`` (``durability="buffered"``): a call returns once its message is handed
over; a background thread commits what is pending at least every ``interval`` seconds, or at
once when ``batch`` messages are pending. ``drain()`` commits everything handed over before
it; ``Client.flush``, ``shutdown`` and the exit hooks call it.

Both work only through the store's public ``append`` and ``append_many``. A forked child gets
an empty committer: what its parent had pending is the parent's to commit.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, List, Optional, Sequence, Tuple, Union

from .errors import QueueError

__all__ = ["GroupCommitter", "BufferedCommitter", "CommitCounts", "commit_group"]

log = logging.getLogger("durable_analytics")

Item = Tuple[str, int]  # (JSON, size in bytes)
Outcome = Union[int, None, BaseException]  # a row id, None (dropped as newest), or an error

DEFAULT_BUFFER_INTERVAL = 0.005
DEFAULT_BUFFER_BATCH = 500
_LEADER_ROUNDS = 2  # groups a leader commits after its own call before it hands over
_BACKPRESSURE_FACTOR = 8  # pending messages beyond batch * this make the caller wait

_COMMITTERS: weakref.WeakSet = weakref.WeakSet()


def commit_group(store: Any, items: Sequence[Item]) -> List[Outcome]:
    """Commit ``items`` in one transaction; one outcome per item, in order.

    If the group cannot be committed as a whole (queue full under ``overflow="raise"``, disk
    full, a lock held too long), each item is committed alone, so that every caller gets the
    answer its own message would have got, and the limits apply per message as without
    grouping. Under ``drop_newest`` the store keeps a prefix of the group: the rest got None.
    """
    if len(items) == 1:
        return [_commit_one(store, items[0])]
    try:
        ids: List[Outcome] = list(store.append_many(items))
    except Exception:
        return [_commit_one(store, item) for item in items]
    return ids + [None] * (len(items) - len(ids))


def _commit_one(store: Any, item: Item) -> Outcome:
    try:
        return store.append(item[0], item[1])
    except Exception as exc:
        return exc


class CommitCounts:
    """What a committer did in this process (not in the file: another process has its own)."""

    __slots__ = ("commits", "committed", "failed")

    def __init__(self) -> None:
        self.commits = 0  # transactions
        self.committed = 0  # messages stored by them
        self.failed = 0  # messages a commit refused (the caller got the error)

    def add(self, outcomes: Sequence[Outcome]) -> None:
        self.commits += 1
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self.failed += 1
            elif outcome is not None:
                self.committed += 1


class _Waiter:
    """One queued call: its message, and a lock released when its outcome is set."""

    __slots__ = ("item", "done", "outcome", "leads")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.outcome: Outcome = None
        self.leads = False


class GroupCommitter:
    """Durable before return, one transaction per group of concurrent calls."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.counts = CommitCounts()
        self._reset()
        _COMMITTERS.add(self)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._busy = False  # a leader is committing
        self._queue: List[_Waiter] = []

    def commit(self, data: str, size: int) -> Optional[int]:
        """Commit one message; return its row id (None if dropped as newest) or raise."""
        with self._mutex:
            if self._busy:
                waiter: Optional[_Waiter] = _Waiter((data, size))
                self._queue.append(waiter)
            else:
                self._busy = True
                waiter = None
        if waiter is None:  # no commit running: this call commits at once, alone
            try:
                outcome = _commit_one(self.store, (data, size))
            finally:
                self._lead(None)
            self.counts.add((outcome,))
        else:
            waiter.done.acquire()
            if waiter.leads:
                self._lead(waiter)
            outcome = waiter.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _lead(self, own: Optional[_Waiter]) -> None:
        """Commit what queued meanwhile, each group in one transaction, for up to
        ``_LEADER_ROUNDS`` groups (the next commit starts without waiting for a thread to
        wake), then pass the lead to the first caller still queued, if any. ``own``: this
        thread's queued call (in the first group), when it was handed the lead."""
        try:
            for _ in range(_LEADER_ROUNDS):
                with self._mutex:
                    group, self._queue = self._queue, []
                    if not group:
                        self._busy = False
                        return
                self._commit_waiters(group, own)
                own = None
        except BaseException:
            self._hand_over()
            raise
        self._hand_over()

    def _commit_waiters(self, group: List[_Waiter], own: Optional[_Waiter]) -> None:
        outcomes: List[Outcome] = [
            QueueError("the commit was interrupted: this message was not stored, retry")
        ] * len(group)
        try:
            outcomes = commit_group(self.store, [waiter.item for waiter in group])
        finally:
            self.counts.add(outcomes)
            for waiter, outcome in zip(group, outcomes):
                waiter.outcome = outcome
                if waiter is not own:
                    waiter.done.release()

    def _hand_over(self) -> None:
        """Pass the lead to the first queued caller, or leave none if nobody waits."""
        with self._mutex:
            if self._queue:
                first = self._queue[0]
                first.leads = True
                first.done.release()
            else:
                self._busy = False

    def pending(self) -> int:
        return 0

    def drain(self) -> None:
        """Nothing to do: every call returned only once committed."""


class BufferedCommitter:
    """Returns at hand-over; a background thread commits every ``interval`` seconds or at
    ``batch`` messages. ``on_commit(row_ids)`` runs after each commit that stored rows.
    Once stopped, it takes nothing more: the caller commits durably instead."""

    def __init__(
        self,
        store: Any,
        *,
        interval: float = DEFAULT_BUFFER_INTERVAL,
        batch: int = DEFAULT_BUFFER_BATCH,
        on_commit: Any = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        self.on_commit = on_commit
        self.counts = CommitCounts()
        self.last_error: Optional[BaseException] = None
        self._closed = False
        self._reset()
        _COMMITTERS.add(self)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._commit_lock = threading.Lock()  # one commit at a time, in hand-over order
        self._pending: List[Item] = []
        self._wake = threading.Event()  # something is pending
        self._full = threading.Event()  # batch reached, or stop: commit now
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    def submit(self, data: str, size: int) -> bool:
        """Hand one message over, to be committed within ``interval`` seconds. False once
        stopped: nothing was taken."""
        with self._mutex:
            if self._closed:
                return False
            pending = self._pending
            pending.append((data, size))
            count = len(pending)
            if self._thread is None:
                self._start()
        if count == 1:
            self._wake.set()
        elif count == self.batch:
            self._full.set()
        elif count >= self.batch * _BACKPRESSURE_FACTOR:
            self.drain()  # commits are falling behind: this caller waits for one
        return True

    def pending(self) -> int:
        return len(self._pending)

    def drain(self) -> None:
        """Commit everything handed over before this call (in this thread)."""
        with self._commit_lock:
            self._commit_pending()

    def stop(self) -> None:
        """Commit what is pending, end the thread and take no more."""
        with self._mutex:
            thread, self._stopping, self._closed = self._thread, True, True
        self._full.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.drain()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="durable-analytics-committer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                self._full.wait(self.interval)
            self._full.clear()
            with self._commit_lock:
                self._commit_pending()
            with self._mutex:
                if self._stopping:
                    self._thread = None
                    return
                if self._pending:
                    self._wake.set()

    def _commit_pending(self) -> None:
        """With ``_commit_lock`` held: commit the pending messages, in batches."""
        while True:
            with self._mutex:
                group, self._pending = self._pending, []
            if not group:
                return
            for start in range(0, len(group), self.batch):
                self._commit(group[start : start + self.batch])

    def _commit(self, group: List[Item]) -> None:
        outcomes = commit_group(self.store, group)
        self.counts.add(outcomes)
        stored = [o for o in outcomes if isinstance(o, int)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            self.last_error = failures[-1]
            log.error(
                "buffered mode: %d message(s) could not be committed and are lost: %s",
                len(failures),
                failures[-1],
            )
        if stored and self.on_commit is not None:
            self.on_commit(stored)


def _after_fork_in_child() -> None:
    for committer in list(_COMMITTERS):
        committer._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
