"""A server on 127.0.0.1 that answers one byte at a time: each byte comes well within any
read timeout, the answer as a whole takes as long as it likes. What a request's total
deadline is for. It records each request's messageIds and when the server stopped writing."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class Seen:
    ids: List[str]
    started: float  # time.monotonic() when the request had been read
    ended: Optional[float] = None  # when the server wrote its last byte or saw the cut


@dataclass
class TrickleServer:
    """``byte_every``: seconds between bytes of the answer; ``read_body=False``: never read
    the request body (the client's send blocks once the socket buffers are full)."""

    byte_every: float = 0.05
    status: int = 200
    body_bytes: int = 200
    read_body: bool = True
    tls: Optional[ssl.SSLContext] = None  # serve https with this server context
    seen: List[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def __enter__(self) -> TrickleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                return
        with conn:
            while not self._stop.is_set():
                request = self._read(conn)
                if request is None:
                    return
                self.seen.append(request)
                answer = (
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {self.body_bytes}\r\n\r\n"
                ).encode() + b"x" * self.body_bytes
                try:
                    for index in range(len(answer)):
                        conn.sendall(answer[index : index + 1])
                        if self._stop.wait(self.byte_every):
                            return
                except OSError:
                    return
                finally:
                    request.ended = time.monotonic()

    def _read(self, conn: socket.socket) -> Optional[Seen]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not self.read_body:
            self._stop.wait()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        if b"content-encoding: gzip" in head.lower():
            body = gzip.decompress(body)
        batch = json.loads(body).get("batch", [])
        return Seen([m.get("messageId") for m in batch], time.monotonic())
