"""``Client``: configuration, the six calls, flush and shutdown, fork and exit hooks.

A call validates its message and commits it to the queue file before it returns; it never
does HTTP (unless ``sync_mode`` asks for it). Delivery belongs to a background worker thread,
one per client per process, started again in each child after ``fork()``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

from .errors import ConfigError, ValidationError
from .limits import DEFAULT_MAX_QUEUE_BYTES, MAX_REQUEST_BYTES
from .messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Alias,
    Encoder,
    Group,
    Id,
    Identify,
    Message,
    Page,
    Screen,
    Timestamp,
    Track,
)
from .retry import RetryPolicy

__all__ = ["Client", "DEFAULT_ENDPOINT", "configure_logging"]

log = logging.getLogger("durable_analytics")

DEFAULT_ENDPOINT = "https://api.segment.io"

Properties = Optional[Mapping[str, Any]]

# Clients not yet shut down. Strong references: a client that went out of scope still has a
# worker thread uploading, and must still get its bounded shutdown at exit (a weak set would
# let the exit kill that thread in the middle of a batch the server may have accepted).
_CLIENTS: Set[Client] = set()


def configure_logging(debug: bool = False, handler: Optional[logging.Handler] = None) -> None:
    """Debug logging on the ``durable_analytics`` logger when asked (or ``DEBUG=analytics``)."""
    if handler is not None and handler not in log.handlers:
        log.addHandler(handler)
    wanted = debug or "analytics" in os.environ.get("DEBUG", "").replace(",", " ").split()
    if wanted:
        log.setLevel(logging.DEBUG)
        if not log.handlers:
            stream = logging.StreamHandler()
            stream.setFormatter(
                logging.Formatter("%(asctime)s durable_analytics %(levelname)s %(message)s")
            )
            log.addHandler(stream)


def _positive(name: str, value: Any, kind: Union[type, Tuple[type, ...]] = (int, float)) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        expected = "a positive integer" if kind is int else "a positive number"
        raise ConfigError(f"{name}={value!r}: use {expected}")
    return value


def _alias(name: str, value: Any, old_name: str, old_value: Any, default: Any) -> Any:
    """Accept segment-analytics-python's name for an option, refusing two different values."""
    if old_value is None:
        return default if value is None else value
    if value is not None and value != old_value:
        raise ConfigError(f"{name}= and {old_name}= name the same setting: pass only one")
    return old_value


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._forget_worker()
    if _CLIENTS:
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


def _shutdown_at_exit() -> None:
    for client in list(_CLIENTS):
        try:
            client.shutdown(timeout=client.exit_timeout)
        except Exception:
            log.exception("shutdown at exit failed; queued messages stay on disk")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)


class Client:
    """Records analytics messages durably and delivers them in the background.

    ``Client("WRITE_KEY")`` is production-ready: messages go to a queue file under the user's
    data directory and are uploaded in batches of ``flush_at`` or every ``flush_interval``
    seconds. ``docs/api.md`` lists every option and why it has its default.
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        *,
        endpoint: Optional[str] = None,
        host: Optional[str] = None,
        queue_path: Optional[Union[str, os.PathLike]] = None,
        durability: str = "normal",
        flush_at: Optional[int] = None,
        flush_interval: Optional[float] = None,
        max_batch_messages: int = 500,
        max_batch_bytes: int = MAX_REQUEST_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_queue_bytes: Optional[int] = DEFAULT_MAX_QUEUE_BYTES,
        max_queue_messages: Optional[int] = None,
        overflow: str = "drop_oldest",
        timeout: Union[float, Tuple[float, float]] = 15.0,
        gzip: bool = True,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        max_retries: int = 10,
        max_retry_age: Optional[float] = None,
        retry_policy: Optional[RetryPolicy] = None,
        auth_pause: float = 300.0,
        lease_seconds: Optional[float] = None,
        flush_timeout: float = 10.0,
        exit_timeout: float = 3.0,
        send: bool = True,
        sync_mode: bool = False,
        debug: bool = False,
        on_error: Optional[Callable[[Exception, List[Dict[str, Any]]], Any]] = None,
        on_delivery: Optional[Callable[[List[Dict[str, Any]]], Any]] = None,
        default_context: Optional[Mapping[str, Any]] = None,
        log_handler: Optional[logging.Handler] = None,
        upload_size: Optional[int] = None,
        upload_interval: Optional[float] = None,
        max_queue_size: Optional[int] = None,
        thread: int = 1,
    ) -> None:
        if not isinstance(write_key, str) or not write_key.strip():
            raise ConfigError(
                "write_key is required: Client('YOUR_WRITE_KEY'), or set "
                "durable_analytics.write_key before the first call"
            )
        from .transport import check_endpoint

        self.write_key = write_key
        self.endpoint = check_endpoint(_alias("endpoint", endpoint, "host", host, DEFAULT_ENDPOINT))
        self.flush_at = _positive(
            "flush_at", _alias("flush_at", flush_at, "upload_size", upload_size, 20), int
        )
        self.flush_interval = _positive(
            "flush_interval",
            _alias("flush_interval", flush_interval, "upload_interval", upload_interval, 5.0),
        )
        max_queue_messages = _alias(
            "max_queue_messages", max_queue_messages, "max_queue_size", max_queue_size, None
        )
        _positive("max_batch_messages", max_batch_messages, int)
        _positive("max_batch_bytes", max_batch_bytes, int)
        _positive("max_message_bytes", max_message_bytes, int)
        _positive("max_retries", max_retries, int)
        _positive("flush_timeout", flush_timeout)
        _positive("auth_pause", auth_pause)
        if not isinstance(exit_timeout, (int, float)) or exit_timeout < 0:
            raise ConfigError(f"exit_timeout={exit_timeout!r}: use a number of seconds >= 0")
        if not isinstance(thread, int) or thread < 1:
            raise ConfigError(f"thread={thread!r}: use a positive integer")
        if thread > 1:
            log.warning(
                "thread=%d: durable-analytics uses one delivery thread per process; "
                "batches of up to %d messages make more unnecessary",
                thread,
                max_batch_messages,
            )
        if max_message_bytes > max_batch_bytes:
            raise ConfigError("max_message_bytes must not exceed max_batch_bytes")
        if isinstance(timeout, tuple) and len(timeout) != 2:
            raise ConfigError(f"timeout={timeout!r}: use seconds, or a (connect, read) pair")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        for name, callback in (("on_error", on_error), ("on_delivery", on_delivery)):
            if callback is not None and not callable(callback):
                raise ConfigError(f"{name}={callback!r}: use a function, or None")
        if proxies is not None and not isinstance(proxies, Mapping):
            raise ConfigError(
                f"proxies={proxies!r}: use a dict such as {{'https': 'http://host:3128'}}"
            )
        _positive("timeout", connect)
        _positive("timeout", read)
        if retry_policy is None:
            retry_policy = (
                RetryPolicy() if max_retry_age is None else RetryPolicy(max_retry_age=max_retry_age)
            )
        elif max_retry_age is not None:
            raise ConfigError("pass max_retry_age inside retry_policy=, not both")
        self.retry_policy = retry_policy
        self.max_batch_messages = max_batch_messages
        self.max_batch_bytes = max_batch_bytes
        self.timeout = timeout
        self.gzip = gzip
        self.verify = verify
        self.proxies = dict(proxies) if proxies else None
        self.max_retries = max_retries
        self.auth_pause = auth_pause
        from .deadline import check_lease, lease_for
        from .transport import request_deadline

        deadline = request_deadline(timeout)
        if lease_seconds is None:
            lease_seconds = lease_for(deadline)
        _positive("lease_seconds", lease_seconds)
        too_short = check_lease(lease_seconds, deadline)
        if too_short:
            raise ConfigError(too_short)
        self.lease_seconds = lease_seconds
        self.flush_timeout = flush_timeout
        self.exit_timeout = exit_timeout
        self.send = send
        self.sync_mode = sync_mode
        self.debug = debug
        self.on_error = on_error
        self.on_delivery = on_delivery
        configure_logging(debug, log_handler)

        try:
            self._encoder = Encoder(
                max_message_bytes=max_message_bytes, default_context=default_context
            )
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
        self._lock = threading.Lock()
        self._last_id = 0
        self._closed = False
        self._worker: Any = None
        self._pid = os.getpid()
        self.store: Any = None
        if send:
            from .store import MessageStore

            self.store = MessageStore.open(
                queue_path,
                write_key,
                durability=durability,
                max_queue_bytes=max_queue_bytes,
                max_queue_messages=max_queue_messages,
                overflow=overflow,
            )
            self.queue_path = self.store.file
            self._ensure_worker()
        else:
            self.queue_path = None
        _CLIENTS.add(self)
        log.debug(
            "client ready: endpoint=%s queue=%s send=%s sync_mode=%s",
            self.endpoint,
            self.queue_path,
            send,
            sync_mode,
        )

    # ----------------------------------------------------------------------------------------
    # The calls (keyword- and position-compatible with segment-analytics-python)

    def identify(
        self,
        user_id: Optional[Id] = None,
        traits: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Tie a user to their traits. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Identify(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                traits=traits,
            )
        )

    def track(
        self,
        user_id: Optional[Id] = None,
        event: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Record an action a user performed. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Track(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                event=event,
                properties=properties,
            )
        )

    def page(
        self,
        user_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Record a page view. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Page(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                name=name,
                category=category,
                properties=properties,
            )
        )

    def screen(
        self,
        user_id: Optional[Id] = None,
        category: Optional[str] = None,
        name: Optional[str] = None,
        properties: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Record a mobile screen view. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Screen(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                name=name,
                category=category,
                properties=properties,
            )
        )

    def group(
        self,
        user_id: Optional[Id] = None,
        group_id: Optional[Id] = None,
        traits: Properties = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        anonymous_id: Optional[Id] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Associate a user with a group. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Group(
                user_id=user_id,
                anonymous_id=anonymous_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                group_id=group_id,
                traits=traits,
            )
        )

    def alias(
        self,
        previous_id: Optional[Id] = None,
        user_id: Optional[Id] = None,
        context: Properties = None,
        timestamp: Optional[Timestamp] = None,
        integrations: Properties = None,
        message_id: Optional[Id] = None,
    ) -> Optional[str]:
        """Link ``previous_id`` to ``user_id``. Returns the stored message's ``messageId``."""
        return self.enqueue(
            Alias(
                user_id=user_id,
                context=context,
                integrations=integrations,
                timestamp=timestamp,
                message_id=message_id,
                previous_id=previous_id,
            )
        )

    def enqueue(self, message: Message) -> Optional[str]:
        """Validate a typed message and commit it to the queue file before returning.

        Returns its ``messageId``; ``None`` only when the queue is full and the overflow
        policy is ``"drop_newest"``. Raises :class:`ValidationError` (nothing stored) for bad
        input and :class:`QueueError` when the file cannot take the message.
        """
        encoded = self._encoder.encode(message)
        if not self.send:
            log.debug("send=False: validated and discarded %s", encoded.message_id)
            return encoded.message_id
        row_id = self.store.append(encoded.json, encoded.size)
        if row_id is None:
            return None
        if row_id > self._last_id:
            self._last_id = row_id
        log.debug("stored %s %s", message.type, encoded.message_id)
        if self.sync_mode:
            self._worker_here().deliver_until(row_id, self.flush_timeout)
        elif not self._closed:
            self._ensure_worker().notify_append()
        return encoded.message_id

    # ----------------------------------------------------------------------------------------
    # Delivery control

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Upload now what this client stored, and wait until it is settled.

        True when every message this client stored before the call was delivered or
        dead-lettered; False when ``timeout`` (default ``flush_timeout``) passed first. What
        is left stays on disk for the worker, the next run or ``durable-analytics drain``.
        """
        if not self.send:
            return True
        limit = self.flush_timeout if timeout is None else timeout
        mark = self._last_id
        if mark == 0:
            return True
        if self._closed:
            return not self.store.pending_through(mark)
        if self.sync_mode:
            return self._worker_here().deliver_until(mark, limit)
        return self._ensure_worker().flush_wait(mark, limit)

    def join(self) -> None:
        """segment-analytics-python's ``join``: a bounded flush."""
        self.flush()

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Flush (bounded by ``timeout``, default ``flush_timeout``), then stop the worker.

        Returns whether everything was delivered. Whatever is left stays on disk and is logged
        at info level. Calls made after shutdown are still stored durably, not sent.
        """
        if not self.send or self._closed:
            self._closed = True
            _CLIENTS.discard(self)
            return not (self.send and self._last_id and self.store.pending_through(self._last_id))
        limit = self.flush_timeout if timeout is None else timeout
        started = time.monotonic()
        delivered = (
            self.flush(limit) if limit > 0 else not self.store.pending_through(self._last_id)
        )
        self._closed = True
        _CLIENTS.discard(self)
        worker = self._worker
        if worker is not None and self._pid == os.getpid():
            worker.stop(max(0.1, limit - (time.monotonic() - started)))
            worker.transport.close()
        if not delivered:
            left = self.store.stats().ready
            log.info(
                "%d message(s) stay queued in %s for the next run or `durable-analytics drain`",
                left,
                self.store.file,
            )
        return delivered

    close = shutdown

    def stats(self) -> Any:
        """Counts read from the queue file: ready, leased, dead, dropped, bytes, oldest age."""
        if self.store is None:
            raise ConfigError("send=False: this client has no queue")
        return self.store.stats()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r}, queue_path={str(self.queue_path)!r})"

    # ----------------------------------------------------------------------------------------
    # Worker lifecycle

    def _new_worker(self) -> Any:
        from .transport import Transport
        from .worker import Worker

        transport = Transport(
            self.write_key,
            self.endpoint,
            gzip=self.gzip,
            timeout=self.timeout,
            proxies=self.proxies,
            verify=self.verify,
        )
        return Worker(
            self.store,
            transport,
            policy=self.retry_policy,
            flush_at=self.flush_at,
            flush_interval=self.flush_interval,
            max_batch_messages=self.max_batch_messages,
            max_batch_bytes=self.max_batch_bytes,
            lease_seconds=self.lease_seconds,
            max_retries=self.max_retries,
            auth_pause=self.auth_pause,
            on_error=self.on_error,
            on_delivery=self.on_delivery,
        )

    def _worker_here(self) -> Any:
        """This process's worker, created on first use (and again in a forked child)."""
        if self._pid != os.getpid():
            self._forget_worker()
        worker = self._worker
        if worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = self._new_worker()
                worker = self._worker
        return worker

    def _ensure_worker(self) -> Any:
        """This process's worker with its background thread running (unless sync_mode)."""
        worker = self._worker_here()
        if not self.sync_mode and not self._closed and worker._thread is None:
            with self._lock:
                worker.start()
        return worker

    def _forget_worker(self) -> None:
        """In a forked child: the parent's thread does not exist here; start afresh."""
        self._lock = threading.Lock()
        self._worker = None
        self._pid = os.getpid()
