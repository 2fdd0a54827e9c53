"""What goes over the wire between a client and the collector: scripted answers, the record
of each request, and the outcome the collector decided on."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Mapping, Optional, Union


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
    headers: Optional[Mapping[str, str]] = None
    """More response headers, e.g. ``{"Location": url}`` for a redirect."""

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


def as_response(value: ResponseLike) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Response(status=value)
    raise TypeError(f"expected a Response or an int status, not {type(value).__name__}")


def default_body(status: int) -> dict[str, Any]:
    if 200 <= status < 300:
        return {"success": True}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return {"error": phrase}


class Outcome:
    """What to answer to one request and what to record about it."""

    __slots__ = ("status", "body", "headers", "accepted", "drop", "content_type")

    def __init__(
        self,
        status: int,
        body: Union[dict[str, Any], list[Any], str, bytes, None] = None,
        *,
        headers: Optional[dict[str, str]] = None,
        accepted: Optional[list[dict[str, Any]]] = None,
        drop: bool = False,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = default_body(status) if body is None else body
        self.headers = headers or {}
        self.accepted = accepted
        self.drop = drop
        self.content_type = content_type
