"""A Segment-compatible loopback collector for tests, demos and the ``collect`` command.

It speaks the wire contract (``POST /v1/batch``, Basic auth, gzip, size limits) over real HTTP
on 127.0.0.1, records everything it receives, and can be scripted to fail in the ways a real
server fails (status codes, ``Retry-After``, slow answers, resets, outages), so that a client's
retry, split and dedupe logic can be tested end to end without a network.

It uses the standard library only, so that it can ship inside the package and run anywhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import gzip
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, Callable, Optional, Union
from urllib.parse import urlsplit

__all__ = ["Collector", "ReceivedRequest", "Response"]

BATCH_PATH = "/v1/batch"
_BIND_RETRY_SECONDS = 2.0
_POLL_INTERVAL = 0.02  # serve_forever's shutdown latency: keeps stop() and refuse() fast


@dataclass(frozen=True)
class Response:
    """One scripted answer, used to make the collector fail the way a real server does."""

    status: int = 200
    retry_after: Optional[str] = None
    """Value of the ``Retry-After`` header, e.g. ``"2"`` or an HTTP date."""
    delay: float = 0.0
    """Seconds to wait before answering, to provoke a client's read timeout."""
    drop: bool = False
    """Close the connection with no answer at all (the client sees a reset)."""
    body: Optional[str] = None
    """Response body; by default a small JSON object suited to the status."""

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise TypeError(f"status must be an int, not {type(self.status).__name__}")
        if not 200 <= self.status <= 599:
            raise ValueError(f"status must be a final HTTP status (200-599), not {self.status}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, not {self.delay}")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the collector saw it, kept so tests can assert on the wire traffic."""

    path: str
    headers: dict[str, str]
    """Header names and values as received (last one wins when a header repeats)."""
    wire_bytes: int
    """Body length as sent on the wire (compressed if gzip)."""
    body_bytes: int
    """Uncompressed body length (0 when the body could not be decompressed)."""
    gzip: bool
    write_key: Optional[str]
    """User name of the HTTP Basic credentials; None without (valid) Basic auth."""
    status: int
    """What the collector answered; 0 if it dropped the connection."""
    payload: Optional[dict[str, Any]]
    """The parsed JSON body, or None if it was not a JSON object."""
    received_at: float
    """``time.monotonic()`` when the request had been read."""


ResponseLike = Union[Response, int]


def _as_response(value: ResponseLike) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Response(status=value)
    raise TypeError(f"expected a Response or an int status, not {type(value).__name__}")


def _compact(message: Any) -> bytes:
    """The message's serialised form, the one the size limit is measured on."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _default_body(status: int) -> dict[str, Any]:
    if 200 <= status < 300:
        return {"success": True}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return {"error": phrase}


def _message_ids(messages: Iterable[Any]) -> list[Any]:
    return [m.get("messageId") if isinstance(m, dict) else None for m in messages]


class _Outcome:
    """What to answer to one request and what to record about it."""

    __slots__ = ("status", "body", "headers", "accepted", "drop")

    def __init__(
        self,
        status: int,
        body: Union[dict[str, Any], str, None] = None,
        *,
        headers: Optional[dict[str, str]] = None,
        accepted: Optional[list[dict[str, Any]]] = None,
        drop: bool = False,
    ) -> None:
        self.status = status
        self.body = _default_body(status) if body is None else body
        self.headers = headers or {}
        self.accepted = accepted
        self.drop = drop


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that stop() and refuse() can cut keep-alive clients off."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        self.stopping = threading.Event()  # wakes handlers sleeping on a scripted delay
        self._conns: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            stopping = self.stopping.is_set()
            if not stopping:
                self._conns.add(request)
        if stopping:  # accepted while stop() or refuse() was cutting connections off
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def mark_reset(self, request: socket.socket) -> None:
        with self._conns_lock:
            self._resets.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
            reset = request in self._resets
            self._resets.discard(request)
        if not reset:
            super().shutdown_request(request)
            return
        # Linger 0: close() sends RST instead of FIN, like a crashed or overloaded server.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.close()

    def close_connections(self) -> None:
        with self._conns_lock:
            self.stopping.set()
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients going away (and our own shutdowns) are normal; anything else is a bug worth
        # seeing, but it must never kill the server or spam stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            self.collector._note_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real collectors
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "durable-analytics-collector"
    server: _Server
    _responding = False

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: test output should not be flooded with access logs."""

    def do_POST(self) -> None:
        self._dispatch()

    def __getattr__(self, name: str) -> Any:
        # Every other method (GET, PUT, HEAD, or anything) gets a 405, not the default 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self._responding = False
        try:
            self.server.collector._serve(self)
        except OSError:  # the client went away, or stop()/refuse() cut the connection
            self.close_connection = True
        except Exception:
            self.server.collector._note_error(traceback.format_exc())
            if self._responding:  # a half-sent answer cannot be repaired
                self.close_connection = True
                return
            try:
                self._send(_Outcome(500, {"error": "collector error"}), close=True)
            except OSError:
                self.close_connection = True

    def _read_body(self) -> Optional[bytes]:
        """Read exactly the request body (Content-Length or chunked); None if malformed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return None
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    return None
                chunks.append(chunk)
                self.rfile.readline(65537)  # CRLF after the chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0:
            return None
        data = self.rfile.read(n)
        return data if len(data) == n else None

    def _send(self, outcome: _Outcome, *, close: bool = False) -> None:
        status = outcome.status
        if isinstance(outcome.body, str):
            body = outcome.body.encode()
        else:
            body = json.dumps(outcome.body).encode()
        no_body = status in (204, 304)
        self._responding = True
        self.send_response(status)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        if not no_body:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


def _parse_basic(header: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(user, password) from an ``Authorization: Basic`` header, or (None, None)."""
    if not header:
        return None, None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password


class Collector:
    """A local Segment-compatible ``/v1/batch`` endpoint that records what it receives.

    ``write_key``: if set, a request whose Basic-auth user differs gets 401; if None any key is
    accepted, but a request without Basic auth still gets 401 (the contract requires it).
    ``out``: append each accepted message to this file as one JSON line.
    ``on_message``: called (in the server thread) with each accepted message.
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        out: Union[str, os.PathLike[str], None] = None,
        on_message: Optional[Callable[[dict[str, Any]], None]] = None,
        max_body_bytes: int = 500_000,
        max_message_bytes: int = 32_000,
    ) -> None:
        self._write_key = write_key
        self._host = host
        self._requested_port = port
        self._out_path = os.fspath(out) if out is not None else None
        self._on_message = on_message
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes

        self._cond = threading.Condition()  # guards everything received and the fault script
        self._requests: list[ReceivedRequest] = []
        self._batches: list[list[dict[str, Any]]] = []
        self._messages: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._duplicates = 0
        self._errors: list[str] = []
        self._script: deque[Response] = deque()
        self._default: Optional[Response] = None
        self._marker: Optional[str] = None

        self._state_lock = threading.Lock()  # guards the server's lifecycle
        self._server: Optional[_Server] = None
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
                server = _Server((self._host, port), self)
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
            return self._duplicates

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
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    # -- faults ----------------------------------------------------------------------------

    def respond_with(self, *responses: ResponseLike) -> None:
        """Queue scripted answers, consumed one per request in order (ints are statuses)."""
        scripted = [_as_response(r) for r in responses]
        with self._cond:
            self._script.extend(scripted)

    def set_default(self, response: Optional[ResponseLike]) -> None:
        """The answer when the script is empty; None restores normal validating behaviour."""
        default = None if response is None else _as_response(response)
        with self._cond:
            self._default = default

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
            self._duplicates = 0
            self._errors.clear()
            self._script.clear()
            self._default = None
            self._marker = None

    # -- request handling (server threads) ------------------------------------------------

    def _note_error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)

    def _next_scripted(self) -> Optional[Response]:
        with self._cond:
            return self._script.popleft() if self._script else self._default

    def _serve(self, handler: _Handler) -> None:
        """Handle one request: read, decide, record, then answer (or drop)."""
        raw = handler._read_body()
        received_at = time.monotonic()
        headers = dict(handler.headers.items())
        encoding = handler.headers.get("Content-Encoding", "").strip().lower()
        is_gzip = encoding == "gzip"
        user, password = _parse_basic(handler.headers.get("Authorization"))

        body: Optional[bytes] = None
        payload: Optional[dict[str, Any]] = None
        close = False
        if raw is None:
            close = True  # we cannot know where the next request starts
            outcome = _Outcome(400, {"error": "malformed body framing"})
            raw = b""
        elif urlsplit(handler.path).path != BATCH_PATH:
            outcome = _Outcome(404, {"error": f"not found; POST {BATCH_PATH}"})
        elif handler.command != "POST":
            outcome = _Outcome(405, headers={"Allow": "POST"})
        else:
            scripted = self._next_scripted()
            body, decode_error = self._decode(raw, encoding)
            payload = self._parse(body) if body is not None else None
            if scripted is not None:
                outcome = self._scripted(scripted, payload, handler.server.stopping)
            else:
                outcome = self._validate(user, password, body, decode_error, payload)

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
        self._record(request, outcome.accepted)
        if outcome.drop:
            handler.server.mark_reset(handler.connection)
            handler.close_connection = True
            return
        handler._send(outcome, close=close)

    def _decode(self, raw: bytes, encoding: str) -> tuple[Optional[bytes], Optional[_Outcome]]:
        if encoding in ("", "identity"):
            return raw, None
        if encoding == "gzip":
            try:
                return gzip.decompress(raw), None
            except (OSError, EOFError, zlib.error):
                return None, _Outcome(400, {"error": "body is not valid gzip"})
        return None, _Outcome(415, {"error": f"unsupported Content-Encoding: {encoding}"})

    @staticmethod
    def _parse(body: bytes) -> Optional[dict[str, Any]]:
        try:
            payload = json.loads(body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            return None
        return payload if isinstance(payload, dict) else None

    @staticmethod
    def _batch_of(payload: Optional[dict[str, Any]]) -> Optional[list[Any]]:
        batch = payload.get("batch") if payload is not None else None
        return batch if isinstance(batch, list) else None

    def _scripted(
        self, response: Response, payload: Optional[dict[str, Any]], stopping: threading.Event
    ) -> _Outcome:
        if response.delay and stopping.wait(response.delay):
            return _Outcome(0, drop=True)  # stopped or refused while "thinking"
        accepted = None
        if 200 <= response.status < 300 and not response.drop:
            batch = self._batch_of(payload)
            accepted = [m for m in batch if isinstance(m, dict)] if batch is not None else []
        headers = {"Retry-After": response.retry_after} if response.retry_after is not None else {}
        return _Outcome(
            response.status, response.body, headers=headers, accepted=accepted, drop=response.drop
        )

    def _validate(
        self,
        user: Optional[str],
        password: Optional[str],
        body: Optional[bytes],
        decode_error: Optional[_Outcome],
        payload: Optional[dict[str, Any]],
    ) -> _Outcome:
        if not user:
            return _Outcome(401, {"error": "missing write key (HTTP Basic auth user name)"})
        if password:
            return _Outcome(401, {"error": "the Basic auth password must be empty"})
        if self._write_key is not None and user != self._write_key:
            return _Outcome(401, {"error": "invalid write key"})
        if decode_error is not None or body is None:
            return decode_error or _Outcome(400, {"error": "undecodable body"})
        if len(body) > self.max_body_bytes:
            return _Outcome(
                413, {"error": f"body of {len(body)} bytes exceeds {self.max_body_bytes}"}
            )
        batch = self._batch_of(payload)
        if batch is None:
            return _Outcome(400, {"error": 'body must be a JSON object with a "batch" list'})
        if not all(isinstance(m, dict) for m in batch):
            return _Outcome(400, {"error": "every batch element must be a JSON object"})
        encoded = [_compact(m) for m in batch]
        too_big = [m for m, data in zip(batch, encoded) if len(data) > self.max_message_bytes]
        if too_big:
            return _Outcome(
                400,
                {
                    "error": f"message larger than {self.max_message_bytes} bytes",
                    "messageIds": _message_ids(too_big),
                },
            )
        with self._cond:
            marker = self._marker
        if marker is not None:
            needle = marker.encode()
            hits = [m for m, data in zip(batch, encoded) if needle in data]
            if hits:
                return _Outcome(
                    400, {"error": "rejected by reject_marker", "messageIds": _message_ids(hits)}
                )
        return _Outcome(200, accepted=batch)

    def _record(self, request: ReceivedRequest, accepted: Optional[list[dict[str, Any]]]) -> None:
        with self._cond:
            self._requests.append(request)
            if accepted is not None:
                self._batches.append(accepted)
                for message in accepted:
                    self._messages.append(message)
                    mid = message.get("messageId")
                    if isinstance(mid, str):
                        if mid in self._ids:
                            self._duplicates += 1
                        else:
                            self._ids.add(mid)
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
