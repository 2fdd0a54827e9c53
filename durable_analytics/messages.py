"""Typed messages, their validation and their exact wire form.

Everything a call is given is checked and turned into JSON here, before anything touches the
disk: a message that leaves this module is one the server can accept, and a value that cannot
be represented raises an error naming where it is, instead of being dropped on the way.
How values become JSON is in ``normalize``, timestamps in ``timestamps``, ids in
``message_ids``; ``normalize`` and ``format_timestamp`` are re-exported here.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple, Union

from . import json_text
from ._version import __version__
from .errors import FieldTypeError, MessageTooLarge, ValidationError
from .limits import DEFAULT_MAX_MESSAGE_BYTES
from .message_ids import new_message_id
from .normalize import find_bad_text, json_mapping, normalize
from .timestamps import Timestamp, format_timestamp

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


class Encoder:
    """Turns a :class:`Message` into its wire JSON: validated, normalised and size-checked."""

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        default_context: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.default_context = json_mapping(default_context, "default_context")

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
        context.update(json_mapping(message.context, "context"))
        selection = context.pop("integrations", None)
        integrations: Dict[str, Any] = {}
        if selection is not None:
            if not isinstance(selection, dict):
                raise FieldTypeError(
                    "context.integrations: expected a dict (mapping), "
                    f"got {type(selection).__name__}"
                )
            integrations.update(selection)
        integrations.update(json_mapping(message.integrations, "integrations"))
        context["library"] = dict(LIBRARY)

        wire["context"] = context
        wire["integrations"] = integrations
        wire["timestamp"] = format_timestamp(message.timestamp)
        message_id = _id(message.message_id, "message_id", False)
        wire["messageId"] = message_id if message_id is not None else new_message_id()
        return wire

    @staticmethod
    def _specific(message: Message, wire: Dict[str, Any]) -> None:
        kind = message.type
        if kind == "identify":
            wire["traits"] = json_mapping(message.traits, "traits")  # type: ignore[attr-defined]
        elif kind == "track":
            wire["event"] = _text(message.event, "event", True)  # type: ignore[attr-defined]
            wire["properties"] = json_mapping(message.properties, "properties")  # type: ignore[attr-defined]
        elif kind in ("page", "screen"):
            name = _text(message.name, "name", False)  # type: ignore[attr-defined]
            category = _text(message.category, "category", False)  # type: ignore[attr-defined]
            if name is not None:
                wire["name"] = name
            if category is not None:
                wire["category"] = category
            wire["properties"] = json_mapping(message.properties, "properties")  # type: ignore[attr-defined]
        elif kind == "group":
            wire["groupId"] = _id(message.group_id, "group_id", True)  # type: ignore[attr-defined]
            wire["traits"] = json_mapping(message.traits, "traits")  # type: ignore[attr-defined]

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
            find_bad_text(wire, "")
            raise

    def serialize(self, wire: Dict[str, Any], text: Optional[str] = None) -> Encoded:
        """A validated wire dict (and its JSON, if made already), size-checked against
        ``max_message_bytes``."""
        if text is None:
            text = self.to_json(wire)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            find_bad_text(wire, "")
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
