"""The HTTP plumbing under the collector: a threading server that can cut keep-alive
connections off (for stop() and refuse()) or reset them, and a handler that reads request
bodies exactly and hands every request, whatever its method, to the collector."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Optional

from .wire import Outcome

if TYPE_CHECKING:
    from .collector import Collector


class Server(ThreadingHTTPServer):
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
        super().__init__(address, Handler)

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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real collectors
    # Answer at once on a kept-alive connection: the headers and the body leave in one send
    # (a buffered wfile, flushed after each request), and TCP_NODELAY besides. Two small sends
    # without it wait ~40 ms for the client's delayed ACK, which would hide a client's speed.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "durable-analytics-collector"
    server: Server
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
                self.send_outcome(Outcome(500, {"error": "collector error"}), close=True)
            except OSError:
                self.close_connection = True

    def read_body(self) -> Optional[bytes]:
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

    def send_outcome(self, outcome: Outcome, *, close: bool = False) -> None:
        status = outcome.status
        if isinstance(outcome.body, bytes):
            body = outcome.body
        elif isinstance(outcome.body, str):
            body = outcome.body.encode()
        else:
            body = json.dumps(outcome.body).encode()
        no_body = status in (204, 304)
        self._responding = True
        self.send_response(status)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        if not no_body:
            self.send_header("Content-Type", outcome.content_type)
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
