"""The collector itself: its lifecycle (start, stop, outage and resume on the same port),
what it received, the faults it is scripted to inject, and how one request is handled."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading
import time
import traceback
from typing import IO, Any, Callable, Optional, Union
from urllib.parse import urlsplit

from ..limits import DEFAULT_MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from . import contract, debugger
from .faults import Faults, scripted_outcome
from .feed import DEFAULT_FEED_SIZE, Counts, Feed, Recent
from .network import Network, NetworkState
from .server import Handler, Server
from .wire import Outcome, ReceivedRequest, Response, ResponseLike, as_response

BATCH_PATH = "/v1/batch"
_BIND_RETRY_SECONDS = 2.0
_POLL_INTERVAL = 0.02  # serve_forever's shutdown latency: keeps stop() and refuse() fast


class Collector:
    """A local Segment-compatible ``/v1/batch`` endpoint that records what it receives.

    ``write_key``: if set, a request whose Basic-auth user differs gets 401; if None any key is
    accepted, but a request without Basic auth still gets 401 (the contract requires it).
    ``out``: append each accepted message to this file as one JSON line.
    ``on_message``: called (in the server thread) with each accepted message.
    ``network``: hold every batch request for a round trip and fail a share of them at
    random (see :class:`Network`; :meth:`set_network` changes it while running).
    ``keep``: remember only the latest ``keep`` messages, and the latest requests and batches
    carrying up to ``keep`` messages in all (None: everything, as tests want; a long-running
    collector sets it to bound its memory). The counts (:attr:`counts`, :attr:`duplicates`)
    stay exact either way.
    ``bearer_token``: if set, a request must carry ``Authorization: Bearer <it>`` (OAuth, as
    Segment's API accepts) instead of Basic auth with the write key; else 401.
    ``debugger``: also serve the debugger page at ``/`` (see :mod:`.debugger`); it shows the
    latest ``keep`` accepted messages (1,000 when ``keep`` is None).
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        out: Union[str, os.PathLike[str], None] = None,
        on_message: Optional[Callable[[dict[str, Any]], None]] = None,
        max_body_bytes: int = MAX_REQUEST_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        network: Optional[Network] = None,
        keep: Optional[int] = None,
        debugger: bool = False,
        bearer_token: Optional[str] = None,
    ) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be None or at least 1, not {keep}")
        self._write_key = write_key
        self._bearer_token = bearer_token
        self._host = host
        self._requested_port = port
        self._out_path = os.fspath(out) if out is not None else None
        self._on_message = on_message
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes
        self._debugger = debugger

        self._cond = threading.Condition()  # guards everything received and the fault script
        self._requests: Recent[ReceivedRequest] = Recent(keep)
        self._batches: Recent[list[dict[str, Any]]] = Recent(keep)
        self._messages: Recent[dict[str, Any]] = Recent(keep)
        self._ids: set[str] = set()
        self._counts = Counts()
        self._feed = Feed(keep if keep is not None else DEFAULT_FEED_SIZE)
        self._errors: list[str] = []
        self._faults = Faults()
        self._marker: Optional[str] = None
        self._network: Optional[NetworkState] = None
        self.set_network(network)

        self._state_lock = threading.Lock()  # guards the server's lifecycle
        self._server: Optional[Server] = None
        self._thread: Optional[threading.Thread] = None
        self._port: Optional[int] = None
        self._out: Optional[IO[str]] = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Collector:
        """Bind (port 0 picks a free port) and serve in a daemon thread; a restart keeps the
        port so the ``url`` a client was given stays valid."""
        with self._state_lock:
            if self._server is not None:
                return self
            port = self._port if self._port is not None else self._requested_port
            self._serve_on(port, retry=self._port is not None)
            if self._out_path is not None and self._out is None:
                try:
                    out = open(self._out_path, "a", encoding="utf-8")  # noqa: SIM115
                except OSError:
                    self._shutdown_server()
                    raise
                with self._cond:
                    self._out = out
        return self

    def stop(self) -> None:
        """Shut down, cutting off keep-alive connections, and close the socket; idempotent."""
        with self._state_lock:
            self._shutdown_server()
            with self._cond:
                out, self._out = self._out, None
            if out is not None:
                out.close()

    def refuse(self) -> None:
        """Simulate an outage: close the listening socket so connections are refused."""
        with self._state_lock:
            self._shutdown_server()

    def resume(self) -> None:
        """End an outage: serve again on the same port, so the client's url still works."""
        with self._state_lock:
            if self._port is None:
                raise RuntimeError("the collector was never started")
            if self._server is None:
                self._serve_on(self._port, retry=True)

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve_on(self, port: int, *, retry: bool) -> None:
        deadline = time.monotonic() + (_BIND_RETRY_SECONDS if retry else 0.0)
        while True:
            try:
                server = Server((self._host, port), self)
                break
            except OSError as exc:  # the old socket may linger briefly after a refuse()
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
        self._port = server.server_port
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"durable-analytics-collector:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _shutdown_server(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=2.0)

    # -- where clients go ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (stays the same across refuse()/resume() and restarts)."""
        if self._port is None:
            raise RuntimeError("the collector is not started")
        return self._port

    @property
    def url(self) -> str:
        """The endpoint to give a client; it POSTs to ``url + "/v1/batch"``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- what was received (snapshots) -----------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request, including rejected, faulted and dropped ones."""
        with self._cond:
            return list(self._requests)

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        """The message lists of accepted (2xx) batches, in arrival order."""
        with self._cond:
            return [list(batch) for batch in self._batches]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """All accepted messages in arrival order, redeliveries included."""
        with self._cond:
            return list(self._messages)

    @property
    def message_ids(self) -> set[str]:
        """Distinct accepted messageIds: what a deduplicating server would count."""
        with self._cond:
            return set(self._ids)

    @property
    def duplicates(self) -> int:
        """Accepted messages whose messageId had already been accepted."""
        with self._cond:
            return self._counts.duplicates

    @property
    def counts(self) -> Counts:
        """Exact totals of requests, accepted events, duplicates, rejections and drops."""
        with self._cond:
            return dataclasses.replace(self._counts)

    def snapshot(self, after: int = 0, limit: int = debugger.MAX_EVENTS_PER_POLL) -> dict[str, Any]:
        """What the debugger page polls for, as JSON-ready data: the newest ``limit`` accepted
        messages after the cursor ``after`` (oldest first), the new cursor, how many after the
        cursor are not included, the counts and the faults."""
        with self._cond:
            entries, missed = self._feed.after(after, limit)
            return {
                "cursor": self._feed.last,
                "generation": self._feed.generation,
                "keep": self._feed.size,
                "missed": missed,
                "events": [entry.as_dict() for entry in entries],
                "counts": dataclasses.asdict(self._counts),
                "faults": {
                    **self._faults.describe(),
                    "reject_marker": self._marker,
                    "network": None if self._network is None else self._network.describe(),
                },
            }

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected collector failures (including ``on_message`` errors)."""
        with self._cond:
            return list(self._errors)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` distinct messageIds were accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ids) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._counts.requests >= count, timeout)

    # -- faults ----------------------------------------------------------------------------

    def respond_with(self, *responses: ResponseLike) -> None:
        """Queue scripted answers, consumed one per request in order (ints are statuses)."""
        scripted = [as_response(r) for r in responses]
        with self._cond:
            self._faults.script.extend(scripted)

    def set_default(self, response: Optional[ResponseLike]) -> None:
        """The answer when the script is empty; None restores normal validating behaviour."""
        default = None if response is None else as_response(response)
        with self._cond:
            self._faults.default = default

    def set_network(self, network: Optional[Network]) -> None:
        """Put a network in front of every batch request from now on (None: answer at once).
        Its random sequence starts again from its seed."""
        state = None if network is None or network == Network() else NetworkState(network)
        with self._cond:
            self._network = state

    @property
    def network_faults(self) -> int:
        """How many requests the network failed (since it was set)."""
        with self._cond:
            state = self._network
        return 0 if state is None else state.faults

    @property
    def network_peak(self) -> int:
        """The most requests the network held at once (since it was set): how many a client
        kept in flight."""
        with self._cond:
            state = self._network
        return 0 if state is None else state.peak

    @property
    def reject_marker(self) -> Optional[str]:
        """A batch with a message whose JSON contains this text is answered 400, as a whole."""
        with self._cond:
            return self._marker

    @reject_marker.setter
    def reject_marker(self, marker: Optional[str]) -> None:
        if marker is not None and (not isinstance(marker, str) or not marker):
            raise ValueError("reject_marker must be a non-empty string or None")
        with self._cond:
            self._marker = marker

    def reset(self) -> None:
        """Forget everything received and clear the script, default and marker (the ``out``
        file is left as is)."""
        with self._cond:
            self._requests.clear()
            self._batches.clear()
            self._messages.clear()
            self._ids.clear()
            self._counts = Counts()
            self._feed.clear()
            self._errors.clear()
            self._faults.clear()
            self._marker = None

    # -- request handling (server threads) ------------------------------------------------

    def _count(self, status: int) -> None:
        counts = self._counts
        counts.requests += 1
        if status == 0:
            counts.dropped += 1
        elif status >= 400:
            counts.rejected += 1

    def _seen(self, message: dict[str, Any]) -> bool:
        """Count an accepted message; True if its messageId had been accepted before."""
        counts = self._counts
        counts.events += 1
        mid = message.get("messageId")
        if not isinstance(mid, str):
            return False
        if mid in self._ids:
            counts.duplicates += 1
            return True
        self._ids.add(mid)
        counts.distinct += 1
        return False

    def _note_error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)

    def _next_scripted(self) -> Optional[Response]:
        with self._cond:
            return self._faults.next()

    def _serve(self, handler: Handler) -> None:
        """Handle one request: read, decide, record, then answer (or drop)."""
        if self._debugger and debugger.handles(handler.command, handler.path):
            self._serve_page(handler)
            return
        raw = handler.read_body()
        received_at = time.monotonic()
        headers = dict(handler.headers.items())
        encoding = handler.headers.get("Content-Encoding", "").strip().lower()
        is_gzip = encoding == "gzip"
        user, password = contract.parse_basic(handler.headers.get("Authorization"))

        body: Optional[bytes] = None
        payload: Optional[dict[str, Any]] = None
        close = False
        if raw is None:
            close = True  # we cannot know where the next request starts
            outcome = Outcome(400, {"error": "malformed body framing"})
            raw = b""
        elif urlsplit(handler.path).path != BATCH_PATH:
            outcome = Outcome(404, {"error": f"not found; POST {BATCH_PATH}"})
        elif handler.command != "POST":
            outcome = Outcome(405, headers={"Allow": "POST"})
        else:
            with self._cond:
                network = self._network
            fault = network.pass_through(handler.server.stopping) if network else None
            scripted = self._next_scripted() if fault is None else None
            body, decode_error = contract.decode(raw, encoding)
            payload = contract.parse(body) if body is not None else None
            if fault is not None:
                outcome = fault
            elif scripted is not None:
                outcome = scripted_outcome(scripted, payload, handler.server.stopping)
            else:
                outcome = self._validate(
                    user, password, body, decode_error, payload, headers.get("Authorization")
                )

        request = ReceivedRequest(
            path=handler.path,
            headers=headers,
            wire_bytes=len(raw),
            body_bytes=len(body) if body is not None else 0,
            gzip=is_gzip,
            write_key=user,
            status=0 if outcome.drop else outcome.status,
            payload=payload,
            received_at=received_at,
        )
        # Record before answering, so a client that got its answer sees the effect.
        self._record(request, outcome.accepted, time.time())
        if outcome.drop:
            handler.server.mark_reset(handler.connection)
            handler.close_connection = True
            return
        handler.send_outcome(outcome, close=close)

    def _serve_page(self, handler: Handler) -> None:
        framed = handler.read_body() is not None
        host = handler.headers.get("Host")
        handler.send_outcome(
            debugger.answer(handler.path, host, self._host, self.snapshot), close=not framed
        )

    def _validate(
        self,
        user: Optional[str],
        password: Optional[str],
        body: Optional[bytes],
        decode_error: Optional[Outcome],
        payload: Optional[dict[str, Any]],
        authorization: Optional[str] = None,
    ) -> Outcome:
        if self._bearer_token is not None:
            refused = contract.check_bearer(authorization, self._bearer_token)
        else:
            refused = contract.check_auth(user, password, self._write_key)
        if refused is not None:
            return refused
        with self._cond:
            marker = self._marker
        return contract.check_batch(
            body,
            decode_error,
            payload,
            max_body_bytes=self.max_body_bytes,
            max_message_bytes=self.max_message_bytes,
            marker=marker,
        )

    def _record(
        self,
        request: ReceivedRequest,
        accepted: Optional[list[dict[str, Any]]],
        received: float,
    ) -> None:
        with self._cond:
            self._requests.append(request, max(1, len(contract.batch_of(request.payload) or ())))
            self._count(request.status)
            if accepted is not None:
                self._batches.append(accepted, max(1, len(accepted)))
                for message in accepted:
                    self._messages.append(message)
                    self._feed.add(message, duplicate=self._seen(message), received=received)
                if self._out is not None and accepted:
                    self._out.write(
                        "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in accepted)
                    )
                    self._out.flush()
            self._cond.notify_all()
        if accepted and self._on_message is not None:
            for message in accepted:
                try:
                    self._on_message(message)
                except Exception:  # a broken callback must not turn into a server error
                    self._note_error(traceback.format_exc())
