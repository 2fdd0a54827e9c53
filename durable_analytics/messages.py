"""Typed messages, their validation and their exact wire form.

Everything a call is given is checked and turned into JSON here, before anything touches the
disk: a message that leaves this module is one the server can accept, and a value that cannot
be represented raises an error naming where it is, instead of being dropped on the way.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import numbers
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Tuple, Union

from . import json_text
from ._version import __version__
from .errors import FieldTypeError, MessageTooLarge, ValidationError
from .limits import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "Message",
    "Identify",
    "Track",
    "Page",
    "Screen",
    "Group",
    "Alias",
    "Encoded",
    "Encoder",
    "from_wire",
    "normalize",
    "format_timestamp",
    "LIBRARY",
    "DEFAULT_MAX_MESSAGE_BYTES",
]

LIBRARY = {"name": "durable-analytics", "version": __version__}

Id = Union[str, int, float]
Timestamp = Union[_dt.datetime, str]


@dataclass
class Message:
    """Fields every message has. Use the subclasses; keywords are the safe way to fill them."""

    type: ClassVar[str] = ""
    _required: ClassVar[Tuple[str, ...]] = ()

    user_id: Optional[Id] = None
    anonymous_id: Optional[Id] = None
    context: Optional[Mapping[str, Any]] = None
    integrations: Optional[Mapping[str, Any]] = None
    timestamp: Optional[Timestamp] = None
    message_id: Optional[Id] = None


@dataclass
class Identify(Message):
    """Ties a user to their traits."""

    type: ClassVar[str] = "identify"
    traits: Optional[Mapping[str, Any]] = None


@dataclass
class Track(Message):
    """An action a user performed."""

    type: ClassVar[str] = "track"
    event: Optional[str] = None
    properties: Optional[Mapping[str, Any]] = None


@dataclass
class Page(Message):
    """A page view on a website."""

    type: ClassVar[str] = "page"
    name: Optional[str] = None
    category: Optional[str] = None
    properties: Optional[Mapping[str, Any]] = None


@dataclass
class Screen(Page):
    """A screen view in a mobile app."""

    type: ClassVar[str] = "screen"


@dataclass
class Group(Message):
    """Associates a user with a group (company, team, account)."""

    type: ClassVar[str] = "group"
    group_id: Optional[Id] = None
    traits: Optional[Mapping[str, Any]] = None


@dataclass
class Alias(Message):
    """Links a previous identity to a user id."""

    type: ClassVar[str] = "alias"
    previous_id: Optional[Id] = None


class Encoded(NamedTuple):
    """A validated message, ready to store: its id, its exact wire JSON, and the dict that
    JSON was made from."""

    message_id: str
    json: str
    size: int
    wire: Dict[str, Any]


# --------------------------------------------------------------------------------------------
# JSON normalisation


def _describe(path: str) -> str:
    return path or "value"


def normalize(value: Any, path: str = "") -> Any:
    """Return a JSON-ready copy of ``value``, or raise naming the offending path.

    Dates become ISO 8601, ``Decimal`` a number, ``UUID`` a string, an ``Enum`` its value,
    tuples and sets lists, bytes UTF-8 text, number keys text; any other object its
    ``str()``. The input is never mutated.
    """
    try:
        return _normalize(value, path, set())
    except RecursionError:
        raise ValidationError(f"{_describe(path)}: nested too deeply for JSON") from None


def _normalize(value: Any, path: str, active: set) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise ValidationError(f"{_describe(path)}: {value!r} is not allowed in JSON")
    if isinstance(value, Mapping):
        return _normalize_mapping(value, path, active)
    if isinstance(value, (list, tuple, set, frozenset)):
        marker = id(value)
        if marker in active:
            raise ValidationError(f"{_describe(path)}: circular reference")
        active.add(marker)
        try:
            return [_normalize(item, f"{path}[{i}]", active) for i, item in enumerate(value)]
        finally:
            active.discard(marker)
    return _convert(value, path, active)


def _normalize_mapping(value: Mapping, path: str, active: set) -> Dict[str, Any]:
    marker = id(value)
    if marker in active:
        raise ValidationError(f"{_describe(path)}: circular reference")
    active.add(marker)
    try:
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                key = _key_text(key, path)
            out[key] = _normalize(item, f"{path}.{key}" if path else key, active)
        return out
    finally:
        active.discard(marker)


def _key_text(key: Any, path: str) -> str:
    """A key JSON can write as text, written as ``json.dumps`` writes it (``1`` -> ``"1"``,
    ``True`` -> ``"true"``), as segment-analytics-python sends it; other keys are errors."""
    if key is None or isinstance(key, (bool, int, float)):
        if isinstance(key, float) and not math.isfinite(key):
            raise ValidationError(f"{_describe(path)}: key {key!r} is not allowed in JSON")
        return json.dumps(key) if key is None or isinstance(key, bool) else str(key)
    raise FieldTypeError(
        f"{_describe(path)}: key {key!r} ({type(key).__name__}) cannot be a JSON object key; "
        "use a string (or a number)"
    )


def _convert(value: Any, path: str, active: set) -> Any:
    """Types that have one obvious JSON form; anything else is an error."""
    if isinstance(value, enum.Enum):
        return _normalize(value.value, path, active)
    if isinstance(value, (str, int)):  # str and int subclasses
        return str(value) if isinstance(value, str) else int(value)
    if isinstance(value, float):
        return _normalize(float(value), path, active)
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValidationError(f"{_describe(path)}: {value!r} is not allowed in JSON")
        if value == value.to_integral_value() and (value.is_zero() or value.adjusted() < 4300):
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValidationError(f"{_describe(path)}: {value!r} is out of range for a JSON number")
        return number
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(
                f"{_describe(path)}: bytes are not valid UTF-8; decode them or send base64 text"
            ) from None
    return _as_text(value, path)


def _as_text(value: Any, path: str) -> str:
    """Any other object (an exception, a plain object) is sent as its ``str()``: the event is
    recorded with what can be said about the value, instead of refused or the key dropped."""
    try:
        return str(value)
    except Exception:
        raise FieldTypeError(
            f"{_describe(path)}: object of type {type(value).__name__} is not JSON serialisable "
            "and str() of it failed; convert it to a string first"
        ) from None


def _find_bad_text(value: Any, path: str) -> None:
    """Locate what JSON cannot carry (a lone surrogate, an int over Python's digit limit)."""
    if type(value) is int:
        try:
            str(value)
        except ValueError:
            raise ValidationError(
                f"{_describe(path)}: integer of {value.bit_length()} bits is too large for JSON"
            ) from None
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"{_describe(path)}: text contains a lone surrogate and is not valid UTF-8"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_bad_text(key, f"{path} key")
            _find_bad_text(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_bad_text(item, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------
# Timestamps

_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def _parse_iso(text: str) -> _dt.datetime:
    match = _ISO.match(text.strip())
    if match is None:
        raise ValueError(text)
    day, clock, fraction, offset = match.groups()
    iso = day + "T" + (clock or "00:00")
    if fraction:
        iso += "." + (fraction + "000000")[:6]
    if offset:
        if offset in ("Z", "z"):
            offset = "+00:00"
        elif len(offset) == 3:
            offset += ":00"
        elif ":" not in offset:
            offset = offset[:3] + ":" + offset[3:]
        iso += offset
    return _dt.datetime.fromisoformat(iso)


def format_timestamp(value: Optional[Timestamp], field: str = "timestamp") -> str:
    """ISO 8601 with offset and milliseconds: the form the wire contract asks for.

    ``None`` means now. A naive datetime (or an ISO string without an offset) is taken as the
    machine's local time, as ``datetime.astimezone`` does.
    """
    if value is None:
        return _utc_now()
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = _parse_iso(value)
        except ValueError:
            raise ValidationError(
                f"{field}: {value!r} is not an ISO 8601 date-time "
                "(for example 2026-11-30T12:00:00Z)"
            ) from None
    else:
        raise FieldTypeError(
            f"{field}: expected a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        try:
            moment = moment.astimezone()
        except (ValueError, OverflowError, OSError):  # e.g. datetime.min: local time is year 0
            raise ValidationError(
                f"{field}: {value!r} has no time zone and cannot be placed in local time; "
                "give an aware datetime (with tzinfo) or an offset such as +00:00"
            ) from None
    return moment.isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------
# Encoding a message


def _id(value: Any, field: str, required: bool) -> Optional[str]:
    if value is None or value == "":
        if required:
            raise ValidationError(f"{field} is required: pass a non-empty string")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value)  # segment's rule: any number, as its text (1.5 -> "1.5")
    raise FieldTypeError(f"{field}: expected a string or a number, got {type(value).__name__}")


def _text(value: Any, field: str, required: bool) -> Optional[str]:
    if value is None or (required and value == ""):
        if required:
            raise ValidationError(f"{field} is required: pass a non-empty string")
        return None
    if not isinstance(value, str):
        raise FieldTypeError(f"{field}: expected a string, got {type(value).__name__}")
    return value


_MAX_PLAIN_DEPTH = 32


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON as it stands (the common case), so it need not be copied.

    The depth bound makes a circular structure fall through to the full walk, which names it.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return value - value == 0.0  # false for NaN and the infinities
    if depth > _MAX_PLAIN_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _is_plain(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_is_plain(item, depth + 1) for item in value)
    return False


def _mapping(value: Any, field: str) -> Dict[str, Any]:
    """A JSON-ready mapping: the caller's own dict when it needs no change (it is only read
    and serialised, never mutated), else a normalised copy."""
    if value is None:
        return {}
    if type(value) is dict and _is_plain(value):
        return value
    if not isinstance(value, Mapping):
        raise FieldTypeError(f"{field}: expected a dict (mapping), got {type(value).__name__}")
    try:
        return _normalize_mapping(value, field, set())
    except RecursionError:
        raise ValidationError(f"{field}: nested too deeply for JSON") from None


# Message ids are random (version 4) UUIDs from os.urandom, drawn 256 at a time: one system
# call per call would also hand the interpreter lock to the delivery thread once more per call.
# Not the ``random`` module: an application that seeds it would repeat our ids (and the server
# drops repeated ids). ``list.pop`` is atomic, so threads never share an id; a forked child
# empties the pool it inherited, or parent and child would hand out the same ids.
_ID_POOL: List[str] = []
_ID_BATCH = 256
os.register_at_fork(after_in_child=_ID_POOL.clear)


def _fill_id_pool() -> None:
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    for i in range(0, len(raw), 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    _ID_POOL.extend(
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    )


def _new_message_id() -> str:
    """A random (version 4) UUID, as text."""
    try:
        return _ID_POOL.pop()
    except IndexError:
        _fill_id_pool()
        return _new_message_id()


_clock_cache: Tuple[int, str] = (-1, "")


def _utc_now() -> str:
    """Now, as ISO 8601 UTC with milliseconds; the date part is formatted once a second."""
    global _clock_cache
    now = time.time()
    second = int(now)
    cached_second, prefix = _clock_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _clock_cache = (second, prefix)
    return f"{prefix}.{int((now - second) * 1000):03d}+00:00"


class Encoder:
    """Turns a :class:`Message` into its wire JSON: validated, normalised and size-checked."""

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        default_context: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.default_context = _mapping(default_context, "default_context")

    def to_wire(self, message: Message, *, defaults: bool = True) -> Dict[str, Any]:
        """The message as the server will see it (camelCase keys), without size check.

        ``defaults=False`` leaves ``default_context`` out (a message that already went through
        here once has it, or was deliberately changed to drop part of it)."""
        if not isinstance(message, Message) or not message.type:
            raise FieldTypeError(
                "expected an Identify, Track, Page, Screen, Group or Alias message, "
                f"got {type(message).__name__}"
            )
        kind = message.type
        wire: Dict[str, Any] = {"type": kind}
        if kind == "alias":
            wire["previousId"] = _id(message.previous_id, "previous_id", True)  # type: ignore[attr-defined]
            wire["userId"] = _id(message.user_id, "user_id", True)
        else:
            user_id = _id(message.user_id, "user_id", False)
            anonymous_id = _id(message.anonymous_id, "anonymous_id", False)
            if user_id is None and anonymous_id is None:
                raise ValidationError(
                    f"{kind}: user_id or anonymous_id is required: pass a non-empty string"
                )
            if user_id is not None:
                wire["userId"] = user_id
            if anonymous_id is not None:
                wire["anonymousId"] = anonymous_id
        self._specific(message, wire)

        context = dict(self.default_context) if defaults else {}
        context.update(_mapping(message.context, "context"))
        selection = context.pop("integrations", None)
        integrations: Dict[str, Any] = {}
        if selection is not None:
            if not isinstance(selection, dict):
                raise FieldTypeError(
                    "context.integrations: expected a dict (mapping), "
                    f"got {type(selection).__name__}"
                )
            integrations.update(selection)
        integrations.update(_mapping(message.integrations, "integrations"))
        context["library"] = dict(LIBRARY)

        wire["context"] = context
        wire["integrations"] = integrations
        wire["timestamp"] = format_timestamp(message.timestamp)
        message_id = _id(message.message_id, "message_id", False)
        wire["messageId"] = message_id if message_id is not None else _new_message_id()
        return wire

    @staticmethod
    def _specific(message: Message, wire: Dict[str, Any]) -> None:
        kind = message.type
        if kind == "identify":
            wire["traits"] = _mapping(message.traits, "traits")  # type: ignore[attr-defined]
        elif kind == "track":
            wire["event"] = _text(message.event, "event", True)  # type: ignore[attr-defined]
            wire["properties"] = _mapping(message.properties, "properties")  # type: ignore[attr-defined]
        elif kind in ("page", "screen"):
            name = _text(message.name, "name", False)  # type: ignore[attr-defined]
            category = _text(message.category, "category", False)  # type: ignore[attr-defined]
            if name is not None:
                wire["name"] = name
            if category is not None:
                wire["category"] = category
            wire["properties"] = _mapping(message.properties, "properties")  # type: ignore[attr-defined]
        elif kind == "group":
            wire["groupId"] = _id(message.group_id, "group_id", True)  # type: ignore[attr-defined]
            wire["traits"] = _mapping(message.traits, "traits")  # type: ignore[attr-defined]

    def encode(self, message: Message) -> Encoded:
        """Validate ``message`` and return its id and wire JSON; raise before anything is stored."""
        return self.serialize(self.to_wire(message))

    def revalidate(self, wire: Mapping[str, Any]) -> Dict[str, Any]:
        """A wire-form dict that code outside this module built or changed, checked by the
        same rules as a call (raises :class:`ValidationError`, naming fields, not values)."""
        return self.to_wire(from_wire(wire), defaults=False)

    @staticmethod
    def to_json(wire: Dict[str, Any]) -> str:
        """A validated wire dict's compact JSON (no size check)."""
        try:
            return json_text.dumps(wire)
        except ValueError:
            _find_bad_text(wire, "")
            raise

    def serialize(self, wire: Dict[str, Any], text: Optional[str] = None) -> Encoded:
        """A validated wire dict (and its JSON, if made already), size-checked against
        ``max_message_bytes``."""
        if text is None:
            text = self.to_json(wire)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            _find_bad_text(wire, "")
            raise
        if size > self.max_message_bytes:
            raise MessageTooLarge(
                f"{wire['type']} message is {size:,} bytes, over the "
                f"{self.max_message_bytes:,}-byte "
                "limit (max_message_bytes): send fewer or shorter properties/traits",
                size=size,
                limit=self.max_message_bytes,
            )
        return Encoded(wire["messageId"], text, size, wire)


_KINDS = {kind.type: kind for kind in (Identify, Track, Page, Screen, Group, Alias)}
# Wire name -> field name, for the fields a message may carry.
_WIRE_FIELDS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "context": "context",
    "integrations": "integrations",
    "timestamp": "timestamp",
    "messageId": "message_id",
    "event": "event",
    "properties": "properties",
    "name": "name",
    "category": "category",
    "groupId": "group_id",
    "traits": "traits",
    "previousId": "previous_id",
}


def from_wire(wire: Mapping[str, Any]) -> Message:
    """The typed message a wire-form dict describes: the inverse of :meth:`Encoder.to_wire`."""
    if not isinstance(wire, Mapping):
        raise FieldTypeError(f"expected a message dict, got {type(wire).__name__}")
    kind = _KINDS.get(wire.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValidationError(f"type: use one of {', '.join(_KINDS)}")
    allowed = {f.name for f in dataclasses.fields(kind)}
    values: Dict[str, Any] = {}
    unknown = []
    for key, value in wire.items():
        name = _WIRE_FIELDS.get(key)
        if name in allowed:
            values[name] = value
        elif key != "type":
            unknown.append(key)
    if unknown:
        raise ValidationError(
            f"{kind.type}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            "put custom data in properties, traits or context"
        )
    return kind(**values)
