"""``Client``: configuration, storing a message, flush and shutdown (the six calls: calls.py;
fork and exit: lifecycle.py).

A call validates its message and commits it to the queue file before it returns; it never
does HTTP (unless ``sync_mode`` asks for it). Delivery belongs to a background worker thread,
one per client per process, started again in each child after ``fork()``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .calls import MessageCalls
from .committer import BufferedCommitter, GroupCommitter
from .config import DEFAULT_ENDPOINT, Config
from .errors import ConfigError, RejectedError, TransientError, ValidationError
from .hooks import apply_before_send
from .lifecycle import CLIENTS
from .limits import MAX_REQUEST_BYTES
from .messages import Encoded, Encoder, Message
from .request_context import apply as _with_request_context
from .result import CallResult, returned_message
from .stored_ids import StoredIds

__all__ = ["Client", "DEFAULT_ENDPOINT", "MAX_REQUEST_BYTES", "configure_logging"]

log = logging.getLogger("durable_analytics")


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


class Client(MessageCalls):
    """Records analytics messages durably and delivers them in the background.

    ``Client("WRITE_KEY")`` is production-ready: messages go to a queue file under the user's
    data directory and are uploaded in batches of ``flush_at`` or every ``flush_interval``
    seconds. ``docs/api.md`` lists every option and why it has its default.
    """

    log = log

    def __init__(self, write_key: Optional[str] = None, *args: Any, **options: Any) -> None:
        """``Client(write_key, host, debug, ...)``: segment-analytics-python's arguments in its
        positional order, then every option of :class:`~durable_analytics.config.Config` by
        keyword. ``config=Config.from_options(...)`` passes a checked configuration whole."""
        given = options.pop("config", None)
        if given is not None and (args or options or write_key is not None):
            raise ConfigError("pass either config= or options, not both")
        config = given if given is not None else Config.from_call((write_key, *args), options)
        self.config: Config = config
        configure_logging(config.debug, config.log_handler)
        self._oauth: Any = None
        if config.oauth:
            from .oauth import TokenAuth

            self._oauth = TokenAuth(
                config.oauth_client_id,
                config.oauth_client_key,
                config.oauth_key_id,
                config.oauth_auth_server,
                config.oauth_scope,
                timeout=config.timeout,
            )
        try:
            self._encoder = Encoder(
                max_message_bytes=config.max_message_bytes,
                default_context=config.default_context,
            )
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
        self._lock = threading.Lock()
        self._stored: Any = None  # the ids this client stored in this process (flush's work)
        self._closed = False
        self._worker: Any = None
        self._pid = os.getpid()
        self.store: Any = None
        self.queue_path = None
        self._buffer: Optional[BufferedCommitter] = None
        if config.send:
            from .store import MessageStore

            buffered = config.durability == "buffered"
            self.store = MessageStore.open(
                config.queue_path,
                config.write_key,
                config.endpoint,
                durability="normal" if buffered else config.durability,
                max_queue_bytes=config.max_queue_bytes,
                max_queue_messages=config.max_queue_messages,
                overflow=config.overflow,
            )
            try:
                self.store.claim(config.endpoint)
            except ConfigError:
                self.store.close()
                raise
            self.queue_path = self.store.file
            self._stored = StoredIds(self.store.first_pending_id)
            self._committer = GroupCommitter(self.store)
            if buffered:
                self._buffer = BufferedCommitter(
                    self.store, interval=config.buffer_interval, on_commit=self._committed
                )
            self._ensure_worker()
        CLIENTS.add(self)
        if config.handle_sigterm:
            from .signals import install_signal_handlers

            install_signal_handlers()
        log.debug(
            "client ready: endpoint=%s queue=%s send=%s sync_mode=%s",
            config.endpoint,
            self.queue_path,
            config.send,
            config.sync_mode,
        )

    def __getattr__(self, name: str) -> Any:
        """Options read as attributes (``client.flush_at``), as on segment's client."""
        if name != "config" and "config" in self.__dict__:
            try:
                return getattr(self.__dict__["config"], name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def host(self) -> str:
        """segment-analytics-python's name for ``endpoint``."""
        return self.config.endpoint

    # ----------------------------------------------------------------------------------------
    # Storing a message (the six calls that build one are in calls.py)

    def enqueue(self, message: Message) -> CallResult:
        """Validate a typed message and commit it to the queue file before returning.

        Returns ``(success, message)`` as segment does, with ``.message_id``: ``success`` is
        False only when the queue is full and the overflow policy (``"drop_newest"``, the
        default) refused the message, or ``before_send`` dropped it. Raises
        :class:`ValidationError` (nothing stored) for bad input and :class:`QueueError` when
        the file cannot take the message.
        """
        encoded, wire = self._encode(message)
        if encoded is None:
            return CallResult(False, returned_message(wire))
        if not self.config.send:
            log.debug("send=False: validated and discarded %s", encoded.message_id)
            return CallResult(True, returned_message(encoded.wire))
        buffer = self._buffer
        if buffer is not None and buffer.submit(encoded.json, encoded.size):
            return CallResult(True, returned_message(encoded.wire))
        row_id = self._committer.commit(encoded.json, encoded.size)
        if row_id is None:
            return CallResult(False, returned_message(encoded.wire))
        self._stored.add(row_id)
        log.debug("stored %s %s", message.type, encoded.message_id)
        if self.config.sync_mode:
            self._deliver_now(row_id)
        elif not self._closed:
            self._ensure_worker().notify_append()
        return CallResult(True, returned_message(encoded.wire))

    def _encode(self, message: Message) -> Tuple[Optional[Encoded], Dict[str, Any]]:
        """Validate (with the request's context), let ``before_send`` decide, check the size.
        ``(None, wire)``: the hook dropped the message (counted as filtered in the file)."""
        encoder = self._encoder
        hook = self.config.before_send
        if hook is None:
            encoded = encoder.encode(_with_request_context(message))
            return encoded, encoded.wire
        wire = encoder.to_wire(_with_request_context(message))
        original = encoder.to_json(wire)
        kept = apply_before_send(hook, wire, original, encoder.revalidate)
        if kept is None:
            log.debug("before_send dropped a %s message", message.type)
            if self.store is not None:
                self.store.count_filtered()
            return None, wire
        encoded = encoder.serialize(kept, original if kept is wire else None)
        return encoded, encoded.wire

    def _committed(self, row_ids: List[int]) -> None:
        """After the buffer committed messages of this client as ``row_ids``."""
        for row_id in row_ids:
            self._stored.add(row_id)
        if not self._closed:
            self._ensure_worker().notify_append(len(row_ids))

    def _deliver_now(self, row_id: int) -> None:
        """sync_mode: upload in the caller's thread and raise if that failed, as segment does.

        One attempt (after any backoff the file asks for, within ``flush_timeout``); the
        message stays on disk either way, for a later call, ``flush()`` or the next run.
        """
        worker = self._worker_here()
        failures = worker.totals.failed_attempts
        mine = ((row_id, row_id),)
        worker.deliver_until(
            lambda: self.store.pending_in(mine) and worker.totals.failed_attempts == failures,
            self.config.flush_timeout,
        )
        dead = self.store.dead_reason(row_id)
        if dead is not None:
            status, reason = dead
            raise RejectedError(
                f"sync_mode: the server refused the message ({reason}); it is kept as a dead "
                "letter (`durable-analytics dead-letters list`)",
                status=status,
            )
        if self.store.pending_in(mine):
            why = worker.totals.last_error or f"no answer within {self.config.flush_timeout:g}s"
            raise TransientError(
                f"sync_mode: the message was not delivered ({why}); it stays queued on disk "
                "and is sent by a later call, flush() or the next run",
                status=worker.totals.last_status,
            )

    # ----------------------------------------------------------------------------------------
    # Delivery control

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Upload now what this client stored, and wait until it is settled.

        True when every message this client stored before the call was delivered or
        dead-lettered; False when ``timeout`` (default ``flush_timeout``) passed first. What
        is left stays on disk for the worker, the next run or ``durable-analytics drain``.
        """
        if not self.config.send:
            return True
        if self._buffer is not None:
            self._buffer.drain()
        limit = self.config.flush_timeout if timeout is None else timeout
        runs = self._stored.snapshot()
        if not runs:
            return True

        def pending() -> bool:
            return bool(self.store.pending_in(runs))

        if self._closed:
            done = not pending()
        elif self.config.sync_mode:
            done = self._worker_here().deliver_until(pending, limit)
        else:
            done = self._ensure_worker().flush_wait(pending, limit)
        if done:
            self._stored.forget_through(runs[-1][1])
        return done

    def join(self) -> None:
        """segment-analytics-python's ``join``: a bounded flush."""
        self.flush()

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Flush (bounded by ``timeout``, default ``flush_timeout``), then stop the worker.

        Returns whether everything was delivered. Whatever is left stays on disk and is logged
        at info level. Calls made after shutdown are still stored durably, not sent.
        """
        if self._buffer is not None:
            self._buffer.stop()
        limit = self.config.flush_timeout if timeout is None else timeout
        started = time.monotonic()
        if limit <= 0:
            self._closed = True  # nothing more is asked of the worker: flush only reads
        delivered = self.flush(limit)
        self._closed = True
        CLIENTS.discard(self)
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

    def retire(self) -> None:
        """Stop taking new batches without waiting: the batch on the wire is settled in the
        background, and at exit (within ``exit_timeout`` plus one request deadline). Used when
        a module-level setting changes, so that the assignment never waits for the network."""
        self._closed = True
        if self._buffer is not None:
            self._buffer.stop()
        worker = self._worker
        if worker is not None and self._pid == os.getpid():
            worker.request_stop()
        for other in list(CLIENTS):  # retired earlier and now idle: nothing left to wait for
            thread = other._worker._thread if other._worker is not None else None
            if other is not self and other._closed and not (thread and thread.is_alive()):
                other.shutdown(timeout=0)

    def stats(self) -> Any:
        """Counts read from the queue file (ready, leased, dead, dropped, bytes, oldest age),
        and in buffered mode what this client holds that is not committed yet."""
        if self.store is None:
            raise ConfigError("send=False: this client has no queue")
        stats = self.store.stats()
        buffer = self._buffer
        if buffer is None:
            return stats
        from .store.records import BufferedStats

        return BufferedStats(
            **{field.name: getattr(stats, field.name) for field in dataclasses.fields(stats)},
            buffered_pending=buffer.pending(),
            buffered_committed=buffer.counts.committed,
            buffered_failed=buffer.counts.failed,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.config.endpoint!r}, queue_path={str(self.queue_path)!r})"

    # ----------------------------------------------------------------------------------------
    # Worker lifecycle

    def _new_worker(self) -> Any:
        from .transport import Transport
        from .worker import Worker

        transport = Transport(
            self.config.write_key,
            self.config.endpoint,
            gzip=self.config.gzip,
            timeout=self.config.timeout,
            proxies=self.config.proxies,
            verify=self.config.verify,
            auth=self._oauth,
            connections=self.config.max_in_flight,
        )
        return Worker(
            self.store,
            transport,
            policy=self.config.retry_policy,
            flush_at=self.config.flush_at,
            flush_interval=self.config.flush_interval,
            max_batch_messages=self.config.max_batch_messages,
            max_batch_bytes=self.config.max_batch_bytes,
            lease_seconds=self.config.lease_seconds,
            max_in_flight=self.config.max_in_flight,
            max_retries=self.config.max_retries,
            auth_pause=self.config.auth_pause,
            on_error=self.config.on_error,
            on_delivery=self.config.on_delivery,
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
        if not self.config.sync_mode and not self._closed and worker._thread is None:
            with self._lock:
                worker.start()
        return worker

    def _forget_worker(self) -> None:
        """In a forked child: the parent's thread and its stored messages are not this
        process's; start afresh (a child that records nothing has nothing to wait for)."""
        self._lock = threading.Lock()
        self._worker = None
        if self._stored is not None:
            self._stored.clear()
        self._pid = os.getpid()
