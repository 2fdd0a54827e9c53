"""A clean stop on SIGTERM, for services (``systemctl stop``, Kubernetes, gunicorn restarts).

By default the library installs no signal handler: an application's own handler stays in
charge, and a SIGTERM that kills the process leaves what was queued on disk (nothing is
lost; the batch on the wire is sent again by the next process, deduplicated by messageId).
Opting in (``install_signal_handlers()``, or ``Client(..., handle_sigterm=True)``) makes the
signal run a bounded shutdown of every client first: each delivers what it stored for up to
its ``exit_timeout`` and settles the batch on the wire. Then the handler that was there
before runs: a Python handler is called, or the default action is taken again (the process
ends with the status a SIGTERM gives). A signal the application ignores stays ignored, with
no shutdown: it chose not to stop on it.

The shutdown runs in a helper thread that the handler waits for, within the bound: the
signal may have interrupted the main thread inside a queue-file operation, whose lock the
shutdown needs, and waiting in place would then never end.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterable, Optional

__all__ = ["install_signal_handlers"]

log = logging.getLogger("durable_analytics")

_previous: Dict[int, Any] = {}
_stopping = threading.Event()
_install_lock = threading.Lock()


def install_signal_handlers(
    signals: Iterable[int] = (signal.SIGTERM,), timeout: Optional[float] = None
) -> None:
    """Run a bounded shutdown of every client on these signals, then the previous handler.

    ``timeout``: seconds each client gets to deliver (default: its ``exit_timeout``); the
    handler returns within that plus one request deadline. Call it from the main thread
    (Python only installs signal handlers there); calling it again changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        from .errors import ConfigError

        raise ConfigError(
            "install_signal_handlers() must be called from the main thread (Python installs "
            "signal handlers only there): call it at start-up, before starting threads"
        )
    handler = _make_handler(timeout)
    with _install_lock:
        for signum in signals:
            previous = signal.getsignal(signum)
            if signum in _previous or previous == signal.SIG_IGN:
                continue  # installed already; or the application chose to ignore it
            _previous[signum] = previous
            signal.signal(signum, handler)


def _make_handler(timeout: Optional[float]) -> Callable[[int, Optional[FrameType]], None]:
    def handle(signum: int, frame: Optional[FrameType]) -> None:
        if not _stopping.is_set():  # a second signal during the shutdown goes straight on
            _stopping.set()
            _bounded_shutdown(timeout)
        _chain(signum, frame)

    return handle


def _bounded_shutdown(timeout: Optional[float]) -> None:
    from .lifecycle import shutdown_all, shutdown_bound

    bound = shutdown_bound(timeout)
    helper = threading.Thread(
        target=shutdown_all, args=(timeout,), name="durable-analytics-sigterm", daemon=True
    )
    helper.start()
    helper.join(bound)
    if helper.is_alive():
        log.warning("shutdown on signal took over %.1fs; queued messages stay on disk", bound)


def _chain(signum: int, frame: Optional[FrameType]) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action: the exit status says SIGTERM
    # None (a handler not installed from Python): nothing more can be done from here
