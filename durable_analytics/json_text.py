"""Compact, strict JSON text for the wire, from values the message validation has already
made JSON-ready (string keys, finite numbers, no cycles).

The standard library's C encoder is the default. When ``orjson`` is installed (the ``fast``
extra), it is used instead: encoding is most of what a call costs after the commit, and
orjson does it several times faster (``docs/performance.md``). What orjson refuses and the
standard library takes (integers beyond 64 bits, text with lone surrogates) goes to the
standard library, so both paths accept and refuse exactly the same values.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

__all__ = ["dumps", "stdlib_dumps", "orjson_dumps"]

Dumps = Callable[[Any], str]


def _make_stdlib() -> Dumps:
    """The C encoder built once, not per call; its circular-reference check is not needed
    for validated values."""
    try:
        from json.encoder import c_make_encoder, encode_basestring
    except ImportError:  # pragma: no cover - CPython always has it
        c_make_encoder = None
    if c_make_encoder is None:  # pragma: no cover
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

    def refuse(value: Any) -> Any:
        raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")

    encoder = c_make_encoder(None, refuse, encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(encoder(value, 0))


stdlib_dumps: Dumps = _make_stdlib()


def _make_orjson() -> Optional[Dumps]:
    try:
        import orjson
    except ImportError:
        return None
    encode, refused = orjson.dumps, orjson.JSONEncodeError

    def dumps(value: Any) -> str:
        try:
            return encode(value).decode("utf-8")
        except refused:
            return stdlib_dumps(value)

    return dumps


orjson_dumps: Optional[Dumps] = _make_orjson()
dumps: Dumps = orjson_dumps or stdlib_dumps
