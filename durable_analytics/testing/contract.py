"""The wire contract as the collector enforces it: HTTP Basic auth with the write key as user
name and an empty password, gzip or identity bodies, a JSON object with a ``batch`` list of
objects, and size limits on the body and on each message.

Pure functions from what was received to an :class:`~.wire.Outcome`, so that a new rule
(another auth scheme, another limit) is one more function here.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Iterable
from typing import Any, Optional

from .wire import Outcome


def compact(message: Any) -> bytes:
    """The message's serialised form, the one the size limit is measured on."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def message_ids(messages: Iterable[Any]) -> list[Any]:
    return [m.get("messageId") if isinstance(m, dict) else None for m in messages]


def parse_basic(header: Optional[str]) -> tuple[Optional[str], Optional[str]]:
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


def decode(raw: bytes, encoding: str) -> tuple[Optional[bytes], Optional[Outcome]]:
    """The uncompressed body, or the answer to a body that cannot be decoded."""
    if encoding in ("", "identity"):
        return raw, None
    if encoding == "gzip":
        try:
            return gzip.decompress(raw), None
        except (OSError, EOFError, zlib.error):
            return None, Outcome(400, {"error": "body is not valid gzip"})
    return None, Outcome(415, {"error": f"unsupported Content-Encoding: {encoding}"})


def parse(body: bytes) -> Optional[dict[str, Any]]:
    try:
        payload = json.loads(body)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return None
    return payload if isinstance(payload, dict) else None


def batch_of(payload: Optional[dict[str, Any]]) -> Optional[list[Any]]:
    batch = payload.get("batch") if payload is not None else None
    return batch if isinstance(batch, list) else None


def check_auth(
    user: Optional[str], password: Optional[str], write_key: Optional[str]
) -> Optional[Outcome]:
    """The 401 for missing or wrong credentials; None when they are acceptable."""
    if not user:
        return Outcome(401, {"error": "missing write key (HTTP Basic auth user name)"})
    if password:
        return Outcome(401, {"error": "the Basic auth password must be empty"})
    if write_key is not None and user != write_key:
        return Outcome(401, {"error": "invalid write key"})
    return None


def check_bearer(header: Optional[str], token: str) -> Optional[Outcome]:
    """The 401 unless the request carries ``Authorization: Bearer <token>`` (OAuth)."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Outcome(401, {"error": "missing OAuth bearer token"})
    if given.strip() != token:
        return Outcome(401, {"error": "invalid OAuth bearer token"})
    return None


def check_batch(
    body: Optional[bytes],
    decode_error: Optional[Outcome],
    payload: Optional[dict[str, Any]],
    *,
    max_body_bytes: int,
    max_message_bytes: int,
    marker: Optional[str],
) -> Outcome:
    """200 with the accepted messages, or the 4xx a real server gives this body."""
    if decode_error is not None or body is None:
        return decode_error or Outcome(400, {"error": "undecodable body"})
    if len(body) > max_body_bytes:
        return Outcome(413, {"error": f"body of {len(body)} bytes exceeds {max_body_bytes}"})
    batch = batch_of(payload)
    if batch is None:
        return Outcome(400, {"error": 'body must be a JSON object with a "batch" list'})
    if not all(isinstance(m, dict) for m in batch):
        return Outcome(400, {"error": "every batch element must be a JSON object"})
    encoded = [compact(m) for m in batch]
    too_big = [m for m, data in zip(batch, encoded) if len(data) > max_message_bytes]
    if too_big:
        return Outcome(
            400,
            {
                "error": f"message larger than {max_message_bytes} bytes",
                "messageIds": message_ids(too_big),
            },
        )
    if marker is not None:
        needle = marker.encode()
        hits = [m for m, data in zip(batch, encoded) if needle in data]
        if hits:
            return Outcome(
                400, {"error": "rejected by reject_marker", "messageIds": message_ids(hits)}
            )
    return Outcome(200, accepted=batch)
