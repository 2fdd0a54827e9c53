"""Celery: delivery that survives prefork pools, and optionally the task in each message.

    from durable_analytics.integrations.celery import setup
    setup(task_context=True)      # once, in the module that defines the Celery app

Every call commits its message to the queue file before it returns, so a task killed by its
hard time limit, or a pool process that dies, loses nothing: the message waits on disk for
the next process's worker. Each prefork pool process gets its own delivery thread after the
fork. A pool process leaves through ``os._exit`` (no ``atexit``): ``setup`` connects
``worker_process_shutdown`` so that one leaving normally first gives its clients their bounded
exit shutdown (``exit_timeout``); one being terminated leaves its messages to the others.
With ``task_context=True`` each call made by a task carries
``context.celery = {"task": name, "taskId": id}``.
"""

from __future__ import annotations

from typing import Any, Dict

from celery import signals

from ..lifecycle import shutdown_all
from ..request_context import RequestContext, activate, deactivate

__all__ = ["setup", "CONTEXT_KEY"]

#: The key under ``context`` that names the task.
CONTEXT_KEY = "celery"

# Bound contexts by task id: prerun and postrun are separate signal calls in the same thread.
_TOKENS: Dict[str, Any] = {}


def _process_shutdown(exitcode: Any = 0, **_: Any) -> None:
    """A pool process leaving normally (warm shutdown, ``max_tasks_per_child``) delivers what
    it can within ``exit_timeout``. One being terminated (a hard time limit: SIGTERM, then
    SIGKILL 0.1 s later) must not linger: killed later, in the middle of its death notice to
    the pool, it would leave the pool's shared pipe locked. Its messages are on disk."""
    if not exitcode:
        shutdown_all()


def _task_prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    context = RequestContext(
        extra={CONTEXT_KEY: {"task": getattr(task, "name", None), "taskId": task_id}}
    )
    _TOKENS[task_id] = activate(context)


def _task_postrun(task_id: str = "", **_: Any) -> None:
    token = _TOKENS.pop(task_id, None)
    if token is not None:
        deactivate(token)


def setup(*, task_context: bool = False) -> None:
    """Connect the signals (idempotent). ``task_context``: name the task in each message."""
    signals.worker_process_shutdown.connect(_process_shutdown, weak=False, dispatch_uid=__name__)
    if task_context:
        signals.task_prerun.connect(_task_prerun, weak=False, dispatch_uid=f"{__name__}.prerun")
        signals.task_postrun.connect(_task_postrun, weak=False, dispatch_uid=f"{__name__}.postrun")
