"""The message layer on its own: validation rules, normalisation, timestamps, the size limit
and the exact wire JSON, checked through :class:`Encoder` without a queue or a network."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import decimal
import enum
import json
import os
import random
import types
import uuid
from typing import Any, Dict

import pytest

from durable_analytics import (
    Alias,
    AnalyticsError,
    ConfigError,
    FieldTypeError,
    Group,
    Identify,
    Message,
    MessageTooLarge,
    Page,
    Screen,
    Track,
    ValidationError,
    __version__,
)
from durable_analytics.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    LIBRARY,
    Encoder,
    format_timestamp,
    normalize,
)

TZ = dt.timezone(dt.timedelta(hours=2))
WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=TZ)
WHEN_WIRE = "2024-05-06T07:08:09.123+02:00"
OURS = {"name": "durable-analytics", "version": __version__}
COMMON = dict(
    context={"ip": "10.0.0.1", "locale": "fr-FR"},
    integrations={"All": True, "Mixpanel": False},
    timestamp=WHEN,
    message_id="m-1",
)
COMMON_WIRE = dict(
    context={"ip": "10.0.0.1", "locale": "fr-FR", "library": OURS},
    integrations={"All": True, "Mixpanel": False},
    timestamp=WHEN_WIRE,
    messageId="m-1",
)


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    HIGH = 3


class Foo:
    pass


def wire(message: Message, **options: Any) -> Dict[str, Any]:
    """The message as it will be stored, parsed back from the exact JSON text."""
    encoded = Encoder(**options).encode(message)
    assert encoded.size == len(encoded.json.encode("utf-8"))
    parsed = json.loads(encoded.json)
    assert parsed["messageId"] == encoded.message_id
    return parsed


def test_library_is_ours() -> None:
    assert LIBRARY == OURS
    assert DEFAULT_MAX_MESSAGE_BYTES == 32_000


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            Identify(user_id="u1", anonymous_id="a1", traits={"email": "x@y.z"}, **COMMON),
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "x@y.z"}},
        ),
        (
            Track(
                user_id="u1", anonymous_id="a1", event="Signed Up", properties={"n": 1}, **COMMON
            ),
            {
                "type": "track",
                "userId": "u1",
                "anonymousId": "a1",
                "event": "Signed Up",
                "properties": {"n": 1},
            },
        ),
        (
            Page(
                user_id="u1",
                anonymous_id="a1",
                category="Docs",
                name="API",
                properties={"p": 2},
                **COMMON,
            ),
            {
                "type": "page",
                "userId": "u1",
                "anonymousId": "a1",
                "category": "Docs",
                "name": "API",
                "properties": {"p": 2},
            },
        ),
        (
            Screen(
                user_id="u1",
                anonymous_id="a1",
                category="Home",
                name="Feed",
                properties={"s": 3},
                **COMMON,
            ),
            {
                "type": "screen",
                "userId": "u1",
                "anonymousId": "a1",
                "category": "Home",
                "name": "Feed",
                "properties": {"s": 3},
            },
        ),
        (
            Group(user_id="u1", anonymous_id="a1", group_id="g1", traits={"plan": "pro"}, **COMMON),
            {
                "type": "group",
                "userId": "u1",
                "anonymousId": "a1",
                "groupId": "g1",
                "traits": {"plan": "pro"},
            },
        ),
        (
            Alias(previous_id="old", user_id="new", **COMMON),
            {"type": "alias", "previousId": "old", "userId": "new"},
        ),
    ],
    ids=lambda v: getattr(v, "type", ""),
)
def test_every_type_with_every_field(message: Message, expected: Dict[str, Any]) -> None:
    assert wire(message) == {**expected, **COMMON_WIRE}


def test_optional_fields_are_filled_or_left_out() -> None:
    """Bare messages carry empty mappings, a fresh uuid4 and now; absent ids stay absent."""
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    out = wire(Page(anonymous_id="a"))
    after = dt.datetime.now(dt.timezone.utc)
    assert uuid.UUID(out.pop("messageId")).version == 4
    stamp = dt.datetime.fromisoformat(out.pop("timestamp"))
    assert before <= stamp <= after
    assert out == {
        "type": "page",
        "anonymousId": "a",
        "properties": {},
        "context": {"library": OURS},
        "integrations": {},
    }


def test_generated_message_ids_are_uuid4_and_unique() -> None:
    ids = [Encoder().encode(Track(user_id="u", event="e")).message_id for _ in range(2000)]
    assert len(set(ids)) == 2000  # several refills of the id pool
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(4, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == ids


def test_seeding_random_does_not_repeat_message_ids() -> None:
    """Applications seed ``random`` for reproducibility; our ids must not follow."""
    encoder = Encoder()
    random.seed(7)
    first = [encoder.encode(Track(user_id="u", event="e")).message_id for _ in range(300)]
    random.seed(7)
    second = [encoder.encode(Track(user_id="u", event="e")).message_id for _ in range(300)]
    assert not set(first) & set(second)


def test_a_forked_child_never_repeats_the_parents_message_ids() -> None:
    encoder = Encoder()
    encoder.encode(Track(user_id="u", event="e"))  # the pool now holds ids the parent will use
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report 300 ids, then leave without running the parent's hooks
        ids = [encoder.encode(Track(user_id="u", event="e")).message_id for _ in range(300)]
        os.write(write_end, " ".join(ids).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split()
    assert os.waitpid(pid, 0)[1] == 0
    parent = [encoder.encode(Track(user_id="u", event="e")).message_id for _ in range(300)]
    assert len(child) == 300 and not set(child) & set(parent)


def test_wire_json_is_compact_utf8() -> None:
    encoded = Encoder().encode(Track(user_id="u", event="café", message_id="m", timestamp=WHEN))
    assert '"event":"café"' in encoded.json
    assert ", " not in encoded.json and '": ' not in encoded.json
    assert encoded.size == len(encoded.json.encode("utf-8")) == len(encoded.json) + 1


def test_int_ids_become_strings() -> None:
    out = wire(Group(user_id=42, anonymous_id=7, group_id=9, message_id=123))
    assert (out["userId"], out["anonymousId"], out["groupId"], out["messageId"]) == (
        "42",
        "7",
        "9",
        "123",
    )
    out = wire(Alias(previous_id=3, user_id=0))
    assert (out["previousId"], out["userId"]) == ("3", "0")


def test_error_hierarchy() -> None:
    assert issubclass(ValidationError, AnalyticsError) and issubclass(ValidationError, ValueError)
    assert issubclass(FieldTypeError, ValidationError) and issubclass(FieldTypeError, TypeError)
    assert issubclass(MessageTooLarge, ValidationError)
    assert issubclass(ConfigError, AnalyticsError) and issubclass(ConfigError, ValueError)


REQUIRED = [
    (
        Identify(),
        ValidationError,
        "identify: user_id or anonymous_id is required: pass a non-empty string",
    ),
    (
        Identify(user_id="", anonymous_id=""),
        ValidationError,
        "identify: user_id or anonymous_id is required",
    ),
    (Track(event="e"), ValidationError, "track: user_id or anonymous_id is required"),
    (Page(name="p"), ValidationError, "page: user_id or anonymous_id is required"),
    (Screen(name="s"), ValidationError, "screen: user_id or anonymous_id is required"),
    (Group(group_id="g"), ValidationError, "group: user_id or anonymous_id is required"),
    (Track(user_id="u"), ValidationError, "event is required: pass a non-empty string"),
    (Track(user_id="u", event=""), ValidationError, "event is required: pass a non-empty string"),
    (Group(user_id="u"), ValidationError, "group_id is required: pass a non-empty string"),
    (Group(user_id="u", group_id=""), ValidationError, "group_id is required"),
    (Alias(user_id="u"), ValidationError, "previous_id is required: pass a non-empty string"),
    (Alias(previous_id="p"), ValidationError, "user_id is required: pass a non-empty string"),
    (Alias(previous_id="p", user_id=""), ValidationError, "user_id is required"),
]

WRONG_TYPES = [
    (Track(user_id=True, event="e"), "user_id: expected a string or a number, got bool"),
    (Track(anonymous_id=False, event="e"), "anonymous_id: expected a string or a number, got bool"),
    (Group(user_id="u", group_id=True), "group_id: expected a string or a number, got bool"),
    (Alias(previous_id=True, user_id="u"), "previous_id: expected a string or a number, got bool"),
    (Alias(previous_id="p", user_id=b"u"), "user_id: expected a string or a number, got bytes"),
    (
        Track(user_id="u", event="e", message_id=True),
        "message_id: expected a string or a number, got bool",
    ),
    (Track(user_id="u", event=5), "event: expected a string, got int"),
    (Page(user_id="u", name=3), "name: expected a string, got int"),
    (Screen(user_id="u", category=["c"]), "category: expected a string, got list"),
    (Identify(user_id="u", traits=[("a", 1)]), "traits: expected a dict (mapping), got list"),
    (Group(user_id="u", group_id="g", traits="plan"), "traits: expected a dict (mapping), got str"),
    (
        Track(user_id="u", event="e", properties="x"),
        "properties: expected a dict (mapping), got str",
    ),
    (Page(user_id="u", properties=1), "properties: expected a dict (mapping), got int"),
    (Track(user_id="u", event="e", context=["x"]), "context: expected a dict (mapping), got list"),
    (
        Track(user_id="u", event="e", integrations=("All",)),
        "integrations: expected a dict (mapping), got tuple",
    ),
    (
        Track(user_id="u", event="e", context={"integrations": ["Vero"]}),
        "context.integrations: expected a dict (mapping), got list",
    ),
    (
        Track(user_id="u", event="e", timestamp=1700000000),
        "timestamp: expected a datetime or an ISO 8601 string, got int",
    ),
    (Track(user_id="u", event="e", timestamp=dt.date(2024, 1, 1)), "got date"),
    (
        Message(user_id="u"),
        "expected an Identify, Track, Page, Screen, Group or Alias message, got Message",
    ),
]


@pytest.mark.parametrize(("message", "kind", "fragment"), REQUIRED)
def test_required_fields(message: Message, kind: type, fragment: str) -> None:
    with pytest.raises(kind) as info:
        Encoder().encode(message)
    assert fragment in str(info.value)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(("message", "fragment"), WRONG_TYPES)
def test_wrong_types_are_field_type_errors(message: Message, fragment: str) -> None:
    with pytest.raises(FieldTypeError) as info:
        Encoder().encode(message)
    assert fragment in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_enqueue_refuses_what_is_not_a_message() -> None:
    with pytest.raises(
        TypeError,
        match="expected an Identify, Track, Page, Screen, Group or Alias message, got dict",
    ):
        Encoder().encode({"type": "track"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Size limit


def padded(total: int, pad_char: str = "x") -> Track:
    """A Track whose wire JSON is exactly ``total`` bytes, padded with ``pad_char`` (then "x")."""
    message = Track(user_id="u", event="e", properties={"pad": ""}, message_id="m", timestamp=WHEN)
    room = total - Encoder(max_message_bytes=10**9).encode(message).size
    count, rest = divmod(room, len(pad_char.encode("utf-8")))
    message.properties = {"pad": pad_char * count + "x" * rest}
    return message


@pytest.mark.parametrize("pad_char", ["x", "é", "€"])
def test_size_limit_boundary(pad_char: str) -> None:
    """Exactly max_message_bytes (UTF-8 bytes, not characters) passes; one byte more does not."""
    limit = DEFAULT_MAX_MESSAGE_BYTES
    assert Encoder().encode(padded(limit, pad_char)).size == limit
    with pytest.raises(MessageTooLarge) as info:
        Encoder().encode(padded(limit + 1, pad_char))
    assert (info.value.size, info.value.limit) == (limit + 1, limit)
    assert "track message is 32,001 bytes, over the 32,000-byte limit (max_message_bytes)" in str(
        info.value
    )


def test_size_limit_is_configurable() -> None:
    with pytest.raises(MessageTooLarge, match="is 301 bytes, over the 300-byte limit") as info:
        Encoder(max_message_bytes=300).encode(padded(301))
    assert (info.value.size, info.value.limit) == (301, 300)
    assert Encoder(max_message_bytes=300).encode(padded(300)).size == 300


# --------------------------------------------------------------------------------------------
# Normalisation


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


UID = uuid.UUID("12345678-1234-5678-1234-567812345678")

NORMALISED = [
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "2024-01-02T03:04:05+00:00"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 600000), "2024-01-02T03:04:05.600000"),
    (dt.date(2024, 1, 2), "2024-01-02"),
    (dt.time(3, 4, 5), "03:04:05"),
    (decimal.Decimal("10"), 10),
    (decimal.Decimal("1E+2"), 100),
    (decimal.Decimal("2.00"), 2),
    (decimal.Decimal("-0"), 0),
    (decimal.Decimal("2.50"), 2.5),
    (decimal.Decimal("-0.125"), -0.125),
    (decimal.Decimal("1E+400"), 10**400),
    (UID, "12345678-1234-5678-1234-567812345678"),
    (Color.RED, "red"),
    (Color.PAIR, [1, 2]),
    (Level.HIGH, 3),
    ((1, "a", None), [1, "a", None]),
    ({7}, [7]),
    (frozenset({"z"}), ["z"]),
    ([], []),
    (b"caf\xc3\xa9", "café"),
    (bytearray(b"abc"), "abc"),
    (memoryview(b"xyz"), "xyz"),
    (Text("t"), "t"),
    (Number(5), 5),
    (Real(0.5), 0.5),
    (collections.OrderedDict(a=1), {"a": 1}),
    (types.MappingProxyType({"b": (2,)}), {"b": [2]}),
    (
        {"deep": [{"when": dt.date(2020, 2, 29), "ids": (UID,)}]},
        {"deep": [{"when": "2020-02-29", "ids": [str(UID)]}]},
    ),
    ("", ""),
    (True, True),
    (None, None),
    (-1.5, -1.5),
]


@pytest.mark.parametrize(("value", "expected"), NORMALISED, ids=lambda v: type(v).__name__)
def test_normalisation(value: Any, expected: Any) -> None:
    out = normalize(value, "properties.x")
    assert out == expected
    assert type(out) is type(expected)
    if isinstance(out, dict):
        assert all(type(v) is type(expected[k]) for k, v in out.items())


def test_normalised_values_reach_the_wire() -> None:
    out = wire(
        Track(
            user_id="u",
            event="e",
            properties={"price": decimal.Decimal("9.99"), "tags": ("a", "b"), "id": UID},
        )
    )
    assert out["properties"] == {"price": 9.99, "tags": ["a", "b"], "id": str(UID)}


def test_shared_references_are_not_circular() -> None:
    shared = {"k": [1]}
    assert normalize({"a": shared, "b": shared, "c": [shared, shared]}) == {
        "a": {"k": [1]},
        "b": {"k": [1]},
        "c": [{"k": [1]}, {"k": [1]}],
    }


def _circular_dict() -> Dict[str, Any]:
    loop: Dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return {"outer": loop}


def _circular_list() -> Dict[str, Any]:
    loop: list = [0]
    loop.append(loop)
    return {"items": loop}


def _deep() -> Dict[str, Any]:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    return {"deep": value}


REJECTED = [
    ({"nan": float("nan")}, ValidationError, "properties.nan: nan is not allowed in JSON"),
    ({"x": [float("inf")]}, ValidationError, "properties.x[0]: inf is not allowed in JSON"),
    ({"x": {"y": -float("inf")}}, ValidationError, "properties.x.y: -inf is not allowed in JSON"),
    (
        {"d": decimal.Decimal("NaN")},
        ValidationError,
        "properties.d: Decimal('NaN') is not allowed in JSON",
    ),
    (
        {"d": decimal.Decimal("sNaN")},
        ValidationError,
        "properties.d: Decimal('sNaN') is not allowed in JSON",
    ),
    (
        {"d": decimal.Decimal("-Infinity")},
        ValidationError,
        "properties.d: Decimal('-Infinity') is not allowed",
    ),
    (
        {"d": decimal.Decimal("1" + "0" * 400 + ".5")},
        ValidationError,
        "is out of range for a JSON number",
    ),
    (
        {"d": decimal.Decimal("1E+5000")},
        ValidationError,
        "properties.d: Decimal('1E+5000') is out of range",
    ),
    (
        {"b": b"\xff\xfe"},
        ValidationError,
        "properties.b: bytes are not valid UTF-8; decode them or send base64 text",
    ),
    (
        {"a": {(1, 2): 1}},
        FieldTypeError,
        "properties.a: key (1, 2) (tuple) cannot be a JSON object key; use a string",
    ),
    ({"a": {float("nan"): 1}}, ValidationError, "properties.a: key nan is not allowed in JSON"),
    (_circular_dict(), ValidationError, "properties.outer.self: circular reference"),
    (_circular_list(), ValidationError, "properties.items[1]: circular reference"),
    (_deep(), ValidationError, "properties: nested too deeply for JSON"),
]


class Named:
    def __str__(self) -> str:
        return "named"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


#: Values segment-analytics-python accepts: the event is recorded (segment drops an object
#: value with a warning; here it is sent as its str(), so nothing is lost silently).
ACCEPTED = [
    ({"e": ValueError("bad input")}, {"e": "bad input"}),
    ({"o": [Named()]}, {"o": ["named"]}),
    ({"c": 1j}, {"c": "1j"}),
    (
        {1: "one", 2.5: "x", None: "n"},
        {"1": "one", "2.5": "x", "null": "n"},
    ),
    ({False: "f"}, {"false": "f"}),
    ({"nested": {7: {8: 9}}}, {"nested": {"7": {"8": 9}}}),
]


@pytest.mark.parametrize(("properties", "expected"), ACCEPTED)
def test_values_segment_accepts_are_recorded(properties: Any, expected: Any) -> None:
    assert wire(Track(user_id="u", event="e", properties=properties))["properties"] == expected


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [(1.5, "1.5"), (157963456373623802, "157963456373623802"), (decimal.Decimal("2.50"), "2.50")],
)
def test_number_ids_are_sent_as_their_text_as_segment_does(user_id: Any, expected: str) -> None:
    got = wire(Group(user_id=user_id, group_id=user_id, message_id=user_id))
    assert got["userId"] == got["groupId"] == got["messageId"] == expected


def test_an_object_whose_str_fails_is_a_field_type_error() -> None:
    with pytest.raises(FieldTypeError, match=r"properties.u: .* str\(\) of it failed"):
        wire(Track(user_id="u", event="e", properties={"u": Unprintable()}))


@pytest.mark.parametrize(("properties", "kind", "fragment"), REJECTED)
def test_rejected_values_name_their_path(
    properties: Dict[str, Any], kind: type, fragment: str
) -> None:
    with pytest.raises(kind) as info:
        Encoder().encode(Track(user_id="u", event="e", properties=properties))
    assert fragment in str(info.value)
    with pytest.raises(kind) as info:
        normalize(properties, "properties")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (
            Track(user_id="u", event="e", properties={"name": "a\ud800b"}),
            "properties.name: text contains a lone surrogate",
        ),
        (
            Track(user_id="u", event="e", properties={"l": ["ok", "\udc80"]}),
            "properties.l[1]: text contains a lone surrogate",
        ),
        (
            Track(user_id="u", event="e", properties={"\ud800": 1}),
            "properties key: text contains a lone surrogate",
        ),
        (Track(user_id="u\udfff", event="e"), "userId: text contains a lone surrogate"),
        (Track(user_id="u", event="\ud800"), "event: text contains a lone surrogate"),
        (
            Identify(user_id="u", context={"page": {"title": "\ud83d"}}),
            "context.page.title: text contains a lone",
        ),
    ],
)
def test_lone_surrogates_are_rejected_with_path(message: Message, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Encoder().encode(message)
    assert fragment in str(info.value)


def test_integers_beyond_the_digit_limit_are_rejected() -> None:
    import sys

    if not hasattr(sys, "get_int_max_str_digits"):
        pytest.skip("this Python has no integer digit limit")
    big = 10 ** (sys.get_int_max_str_digits() + 10)
    with pytest.raises(
        ValidationError, match=r"properties\.n\[0\]: integer of \d+ bits is too large for JSON"
    ):
        Encoder().encode(Track(user_id="u", event="e", properties={"n": [big]}))


def test_callers_data_is_never_mutated() -> None:
    traits = {
        "name": "Ann",
        "tags": ("a", {"b"}),
        "when": dt.date(2024, 1, 1),
        "nested": {"d": decimal.Decimal("1.5")},
    }
    properties = {"items": [{"sku": UID, "qty": 2}], "raw": b"x"}
    context = {
        "ip": "1.2.3.4",
        "integrations": {"All": False, "Vero": True},
        "library": {"name": "theirs"},
    }
    integrations = {"Mixpanel": {"projectId": "p"}}
    default_context = {"app": {"name": "shop"}, "integrations": {"Amplitude": True}}
    originals = copy.deepcopy((traits, properties, context, integrations, default_context))
    encoder = Encoder(default_context=default_context)
    for message in (
        Identify(user_id="u", traits=traits, context=context, integrations=integrations),
        Group(user_id="u", group_id="g", traits=traits, context=context, integrations=integrations),
        Track(
            user_id="u",
            event="e",
            properties=properties,
            context=context,
            integrations=integrations,
        ),
        Page(user_id="u", properties=properties, context=context, integrations=integrations),
    ):
        out = encoder.to_wire(message)
        out["context"]["ip"] = "changed"
        out["integrations"]["Vero"] = "changed"
        out.get("traits", out.get("properties", {})).clear()
        encoder.encode(message)
    assert (traits, properties, context, integrations, default_context) == originals
    assert encoder.to_wire(Track(user_id="u", event="e"))["context"]["app"] == {"name": "shop"}


# --------------------------------------------------------------------------------------------
# Context, integrations, default_context


def test_context_integrations_travel_as_top_level_integrations() -> None:
    """The seed's selection, given where the seed gives it, leaves context for the wire field."""
    selection = {"All": False, "Vero": True, "Google Analytics": False}
    out = wire(Track(user_id="u", event="e", context={"ip": "1.1.1.1", "integrations": selection}))
    assert out["integrations"] == selection
    assert out["context"] == {"ip": "1.1.1.1", "library": OURS}


def test_top_level_integrations_merge_over_the_context_selection() -> None:
    out = wire(
        Track(
            user_id="u",
            event="e",
            context={"integrations": {"All": False, "Vero": True, "Google Analytics": False}},
            integrations={"Vero": False, "Mixpanel": {"projectId": "p"}},
        )
    )
    assert out["integrations"] == {
        "All": False,
        "Vero": False,
        "Google Analytics": False,
        "Mixpanel": {"projectId": "p"},
    }
    assert "integrations" not in out["context"]


def test_default_context_is_merged_and_the_call_wins_but_library_is_ours() -> None:
    encoder = Encoder(
        default_context={"app": {"name": "shop"}, "locale": "en", "integrations": {"All": False}}
    )
    out = json.loads(
        encoder.encode(
            Track(
                user_id="u",
                event="e",
                context={"locale": "de", "library": {"name": "fake"}},
                integrations={"Vero": True},
            )
        ).json
    )
    assert out["context"] == {"app": {"name": "shop"}, "locale": "de", "library": OURS}
    assert out["integrations"] == {"All": False, "Vero": True}
    bare = json.loads(encoder.encode(Track(user_id="u", event="e")).json)
    assert bare["context"] == {"app": {"name": "shop"}, "locale": "en", "library": OURS}


def test_default_context_must_be_a_mapping() -> None:
    with pytest.raises(FieldTypeError, match="default_context: expected a dict"):
        Encoder(default_context=["x"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Timestamps


def test_aware_datetime_keeps_its_offset_with_milliseconds() -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert (
        format_timestamp(dt.datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=india))
        == "2024-01-02T03:04:05.678+05:30"
    )
    assert (
        format_timestamp(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
        == "2024-01-02T03:04:05.000+00:00"
    )


def test_naive_datetime_is_local_time() -> None:
    naive = dt.datetime(2024, 7, 1, 12, 30, 15, 250000)
    assert format_timestamp(naive) == naive.astimezone().isoformat(timespec="milliseconds")
    winter = dt.datetime(2024, 1, 15, 8, 0)
    assert format_timestamp(winter) == winter.astimezone().isoformat(timespec="milliseconds")


def test_omitted_timestamp_is_now() -> None:
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(milliseconds=1)
    stamp = dt.datetime.fromisoformat(format_timestamp(None))
    assert before <= stamp <= dt.datetime.now(dt.timezone.utc)
    assert stamp.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000+00:00"),
        ("2024-01-02t03:04:05z", "2024-01-02T03:04:05.000+00:00"),
        ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05.000+00:00"),
        ("2024-01-02T03:04:05-08:00", "2024-01-02T03:04:05.000-08:00"),
        ("2024-01-02T03:04:05+0530", "2024-01-02T03:04:05.000+05:30"),
        ("2024-01-02T03:04:05-03", "2024-01-02T03:04:05.000-03:00"),
        ("2024-01-02T03:04:05.1Z", "2024-01-02T03:04:05.100+00:00"),
        ("2024-01-02T03:04:05.12Z", "2024-01-02T03:04:05.120+00:00"),
        ("2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05.123+00:00"),
        ("2024-01-02T03:04:05,5+01:00", "2024-01-02T03:04:05.500+01:00"),
        ("2024-01-02 03:04:05.999Z", "2024-01-02T03:04:05.999+00:00"),
        ("2024-01-02T03:04Z", "2024-01-02T03:04:00.000+00:00"),
        (" 2024-01-02T03:04:05Z ", "2024-01-02T03:04:05.000+00:00"),
        ("1850-06-01T00:00:00Z", "1850-06-01T00:00:00.000+00:00"),
    ],
)
def test_iso_strings_are_validated_and_normalised(text: str, expected: str) -> None:
    assert format_timestamp(text) == expected
    assert wire(Track(user_id="u", event="e", timestamp=text))["timestamp"] == expected


def test_iso_strings_without_offset_are_local_time() -> None:
    assert format_timestamp("2024-07-01T12:30:15.250") == dt.datetime(
        2024, 7, 1, 12, 30, 15, 250000
    ).astimezone().isoformat(timespec="milliseconds")
    assert format_timestamp("2024-07-01") == dt.datetime(2024, 7, 1).astimezone().isoformat(
        timespec="milliseconds"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "1700000000",
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T00:00:00+24:00",
        "2024/01/01 00:00:00",
        "2024-01-01T00:00:00 UTC",
        "2024-01-01T00:00:00ZZ",
    ],
)
def test_garbage_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        Encoder().encode(Track(user_id="u", event="e", timestamp=text))
    assert (
        f"timestamp: {text!r} is not an ISO 8601 date-time (for example 2026-11-30T12:00:00Z)"
        in str(info.value)
    )
    assert not isinstance(info.value, TypeError)


def test_historical_timestamps_pass_through() -> None:
    """The seed's historical import: old events keep the time they happened."""
    old = dt.datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert (
        wire(Identify(user_id="u", timestamp=old))["timestamp"] == "1999-12-31T23:59:59.999-05:00"
    )
    assert (
        wire(Alias(previous_id="a", user_id="b", timestamp="2001-09-09T01:46:40Z"))["timestamp"]
        == "2001-09-09T01:46:40.000+00:00"
    )
