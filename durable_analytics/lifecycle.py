"""The clients of this process, and what happens to them at fork and at exit.

Every client not yet shut down is registered here, by strong reference: a client that went
out of scope still has a worker thread uploading, and must still get its bounded shutdown at
exit (a weak set would let the exit kill that thread in the middle of a batch the server may
have accepted). A forked child forgets the parent's workers and stored ids; a
``multiprocessing`` child, which leaves through ``os._exit``, gets the exit shutdown through
the finalizers it does run.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from typing import Any, Optional, Set

__all__ = ["CLIENTS", "shutdown_all", "shutdown_bound"]

log = logging.getLogger("durable_analytics")

CLIENTS: Set[Any] = set()


def shutdown_all(timeout: Optional[float] = None) -> None:
    """Shut every client down, as at exit: each gets ``timeout`` (default: its
    ``exit_timeout``) to deliver, all at the same time; then every worker is told to stop
    before any is waited for, so that the batches still on the wire end together. It takes at
    most :func:`shutdown_bound`, however many clients there are."""
    clients = list(CLIENTS)
    started = time.monotonic()

    def left(client: Any) -> float:
        limit = client.exit_timeout if timeout is None else timeout
        return max(0.0, started + limit - time.monotonic())

    steps = (lambda c: c.flush(left(c)), lambda c: c.retire(), lambda c: c.shutdown(left(c)))
    for step in steps:
        for client in clients:
            try:
                step(client)
            except Exception:
                log.exception("shutdown failed; queued messages stay on disk")


def shutdown_bound(timeout: Optional[float] = None) -> float:
    """How long :func:`shutdown_all` may take: the longest time given to a client plus one
    request deadline and the time to write its outcome."""
    from .deadline import LEASE_MARGIN
    from .transport import request_deadline

    longest = 0.0
    for client in list(CLIENTS):
        given = client.exit_timeout if timeout is None else timeout
        longest = max(longest, given + request_deadline(client.config.timeout))
    return longest + LEASE_MARGIN


def _shutdown_at_exit() -> None:
    shutdown_all()


def _after_fork_in_child() -> None:
    for client in list(CLIENTS):
        client._forget_worker()
    if CLIENTS:
        _shut_down_in_multiprocessing_children()


def _shut_down_in_multiprocessing_children() -> None:
    """A ``multiprocessing`` child leaves through ``os._exit``, which skips ``atexit``: give it
    the same bounded exit shutdown through the finalizers it does run. Registered as an
    after-fork callback because the child clears its finalizers right after the fork."""
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_EXIT_HOOK_OWNER, _register_exit_finalizer)


def _register_exit_finalizer(_owner: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _shutdown_at_exit, exitpriority=10)


class _ExitHookOwner:
    """multiprocessing keeps after-fork callbacks in a weak mapping: this object holds ours."""


_EXIT_HOOK_OWNER = _ExitHookOwner()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
