"""The only module that speaks HTTP: builds the request, sends it, classifies the answer.

It knows the wire contract (``POST {endpoint}/v1/batch``, Basic auth with the write key,
gzip, ``sentAt``) and nothing about queues or retries: what to do with an answer is the
worker's business. The write key never appears in a log line or an error.
"""

from __future__ import annotations

import datetime as _dt
import gzip as _gzip
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import requests

from . import policy
from ._version import __version__
from .config import check_endpoint
from .deadline import DeadlineAdapter, cutoff
from .policy import DEFAULT_MAX_IN_FLIGHT, Kind, parse_retry_after

__all__ = [
    "Kind",
    "Outcome",
    "Transport",
    "envelope_overhead",
    "check_endpoint",
    "request_deadline",
    "USER_AGENT",
]

log = logging.getLogger("durable_analytics")

USER_AGENT = f"durable-analytics/{__version__}"
_SENT_AT_SAMPLE = "2026-01-01T00:00:00.000+00:00"
_GZIP_LEVEL = 6

Timeout = Union[float, Tuple[float, float]]


def envelope_overhead() -> int:
    """Bytes a request body adds around its messages: the limit is on the whole body."""
    return len(f'{{"batch":[],"sentAt":"{_SENT_AT_SAMPLE}"}}'.encode())


@dataclass(frozen=True)
class Outcome:
    """The classified answer to one request (``status`` is ``None`` when none came)."""

    kind: Kind
    status: Optional[int]
    reason: str
    retry_after: Optional[float] = None
    wire_bytes: int = 0


def classify(status: int, reason: str, retry_after: Optional[float]) -> Outcome:
    """The answer as an :class:`Outcome`; what a status means is ``policy.classify``'s."""
    kind = policy.classify(status)
    return Outcome(kind, status, reason, retry_after if kind is not Kind.ACCEPTED else None)


def request_deadline(timeout: Timeout) -> float:
    """The total deadline of one request: ``timeout`` seconds, or connect + read of a pair."""
    if isinstance(timeout, tuple):
        return float(sum(timeout))
    return float(timeout)


class Transport:
    """Sends batches of stored message JSON to ``{endpoint}/v1/batch`` over one session."""

    def __init__(
        self,
        write_key: str,
        endpoint: str,
        *,
        gzip: bool = True,
        timeout: Timeout = 15.0,
        proxies: Optional[Mapping[str, str]] = None,
        verify: Union[bool, str] = True,
        auth: Any = None,
        connections: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """``auth``: what ``requests`` takes as ``auth=`` (an OAuth bearer token source, see
        oauth.py); by default HTTP Basic with the write key. ``connections``: how many kept-alive
        connections to keep, one per upload in flight (fewer would open and discard one per
        request beyond them)."""
        self.url = check_endpoint(endpoint) + "/v1/batch"
        self.gzip = gzip
        self.timeout = timeout
        self.verify = verify
        self._auth = auth if auth is not None else (write_key, "")
        self._session = requests.Session()
        adapter = DeadlineAdapter(pool_maxsize=max(1, connections))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        if proxies:
            self._session.proxies.update(dict(proxies))
        # Environment proxies still apply (requests' trust_env) unless proxies= overrides them.

    @property
    def timeout(self) -> Timeout:
        """Seconds one request may take in all, or a (connect, read) pair: see
        :func:`request_deadline`. Each socket operation is bounded by it as well."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Timeout) -> None:
        self._timeout = value
        self.deadline = request_deadline(value)
        connect = value[0] if isinstance(value, tuple) else value
        self._socket_timeouts = (float(connect), self.deadline)

    def body(self, messages: Sequence[str], sent_at: Optional[str] = None) -> bytes:
        """The request body: stored JSON spliced in as is, and ``sentAt`` of this attempt."""
        if sent_at is None:
            sent_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        return ('{"batch":[' + ",".join(messages) + '],"sentAt":"' + sent_at + '"}').encode("utf-8")

    def send(self, messages: Sequence[str]) -> Outcome:
        """POST one batch; never raises for network trouble: it is an Outcome like any other."""
        body = self.body(messages)
        headers = {}
        if self.gzip:
            body = _gzip.compress(body, compresslevel=_GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        try:
            with cutoff(self.deadline) as watch:
                response = self._session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    auth=self._auth,
                    timeout=self._socket_timeouts,
                    verify=self.verify,
                    allow_redirects=False,
                )
        except requests.exceptions.RequestException as exc:
            return self._failed(exc, watch.fired, len(body))
        if watch.fired:  # cut mid-headers, http.client may still make up a "response"
            response.close()
            return self._failed(None, True, len(body))
        status = response.status_code
        if status in (401, 403) and hasattr(self._auth, "invalidate"):
            self._auth.invalidate()  # an OAuth token the API refused: fetch a new one next time
        text = _short(response.text) if status >= 300 else ""
        reason = f"HTTP {status}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            reason += f" (redirect to {response.headers.get('Location')}: set endpoint to it)"
        outcome = classify(status, reason, parse_retry_after(response.headers.get("Retry-After")))
        return Outcome(outcome.kind, status, reason, outcome.retry_after, len(body))

    def _failed(self, exc: Optional[Exception], cut: bool, wire_bytes: int) -> Outcome:
        """A request that got no usable answer: transient, whatever the cause."""
        if cut:
            reason = f"no complete answer within the {self.deadline:g}s request deadline"
        elif isinstance(exc, requests.exceptions.SSLError):
            log.error("TLS error talking to %s: %s", self.url, _short(exc))
            reason = f"TLS error: {_short(exc)}"
        else:
            reason = f"{type(exc).__name__}: {_short(exc)}"
        return Outcome(Kind.TRANSIENT, None, reason, None, wire_bytes)

    def max_seconds(self) -> float:
        """The longest one request can take: its total deadline, connect and answer together."""
        return self.deadline

    def close(self) -> None:
        self._session.close()


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
