"""Property-based tests of the normaliser: whatever it accepts is exact, valid JSON that
round-trips; whatever it refuses is refused with a ValidationError naming the right path."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import enum
import json
from typing import Any, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from durable_analytics import Track, ValidationError
from durable_analytics.messages import Encoder, normalize

SETTINGS = settings(max_examples=200, deadline=None)
ENCODER = Encoder(max_message_bytes=10**8)  # the size limit has its own tests

Pair = Tuple[Any, Any]  # (a value a caller may pass, the JSON value it must become)


class Plan(enum.Enum):
    FREE = "free"
    SEATS = 5
    PAIR = (1, "x")


OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
KEYS = st.text(max_size=8)


def _decimal_pair(value: decimal.Decimal) -> Pair:
    return value, int(value) if value == value.to_integral_value() else float(value)


def _set_pair(items: frozenset) -> Pair:
    value = set(items)
    return value, list(value)  # the order the normaliser will see


LEAVES: st.SearchStrategy[Pair] = st.one_of(
    st.none().map(lambda v: (v, v)),
    st.booleans().map(lambda v: (v, v)),
    st.integers(-(10**30), 10**30).map(lambda v: (v, v)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: (v, v)),
    st.text().map(lambda v: (v, v)),
    st.dates().map(lambda v: (v, v.isoformat())),
    st.datetimes(timezones=st.none() | OFFSETS).map(lambda v: (v, v.isoformat())),
    st.times().map(lambda v: (v, v.isoformat())),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20).map(
        _decimal_pair
    ),
    st.uuids().map(lambda v: (v, str(v))),
    st.sampled_from(Plan).map(
        lambda v: (v, list(v.value) if isinstance(v.value, tuple) else v.value)
    ),
    st.text().map(lambda v: (v.encode("utf-8"), v)),
    st.text().map(lambda v: (bytearray(v.encode("utf-8")), v)),
    st.frozensets(st.integers() | st.text(max_size=5), max_size=4).map(_set_pair),
    st.frozensets(st.integers(), max_size=4).map(lambda v: (v, list(v))),
)


def _containers(children: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    pairs = st.lists(children, max_size=4)
    return st.one_of(
        pairs.map(lambda items: ([v for v, _ in items], [e for _, e in items])),
        pairs.map(lambda items: (tuple(v for v, _ in items), [e for _, e in items])),
        st.dictionaries(KEYS, children, max_size=4).map(
            lambda d: ({k: v for k, (v, _) in d.items()}, {k: e for k, (_, e) in d.items()})
        ),
    )


VALUES = st.recursive(LEAVES, _containers, max_leaves=25)
PROPERTIES = st.dictionaries(KEYS, VALUES, max_size=5).map(
    lambda d: ({k: v for k, (v, _) in d.items()}, {k: e for k, (_, e) in d.items()})
)


def as_json(value: Any) -> str:
    """Exact form: tells 1 from 1.0 from true, which == would not."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


@SETTINGS
@given(VALUES)
def test_accepted_values_become_the_expected_json(pair: Pair) -> None:
    value, expected = pair
    original = copy.deepcopy(value)
    out = normalize(value, "properties.x")
    assert as_json(out) == as_json(expected)
    assert json.loads(as_json(out)) == out
    assert value == original  # never mutated


@SETTINGS
@given(PROPERTIES)
def test_accepted_properties_round_trip_through_the_encoder(pair: Pair) -> None:
    properties, expected = pair
    encoded = ENCODER.encode(Track(user_id="u", event="e", properties=properties))
    assert encoded.size == len(encoded.json.encode("utf-8"))
    parsed = json.loads(encoded.json)
    assert as_json(parsed["properties"]) == as_json(expected)
    assert parsed["properties"] == normalize(properties, "properties")


#: (a value JSON cannot carry, whether ``normalize`` alone sees it or only the encoder does)
BAD: st.SearchStrategy[Tuple[Any, bool]] = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf")]).map(lambda v: (v, True)),
    st.sampled_from(["NaN", "sNaN", "-Infinity", "1E+5000", "1" + "0" * 400 + ".5"]).map(
        lambda v: (decimal.Decimal(v), True)
    ),
    st.sampled_from([b"\xff", b"ok\xc3(", b"\xed\xa0\x80"]).map(lambda v: (v, True)),
    st.dictionaries(
        st.tuples(st.integers()) | st.frozensets(st.integers(), min_size=1),
        VALUES.map(lambda p: p[0]),
        min_size=1,
        max_size=2,
    ).map(lambda v: (v, True)),
    st.tuples(st.text(max_size=3), st.characters(categories=["Cs"]), st.text(max_size=3))
    .map(lambda parts: "".join(parts))
    .map(lambda v: (v, False)),
    st.integers(10**4400, 10**4500).map(lambda v: (v, False)),
)
GOOD = VALUES.map(lambda pair: pair[0])


@st.composite
def poisoned(draw: st.DrawFn) -> Tuple[dict, str, bool]:
    """Properties with one bad value buried somewhere, and the path an error must name."""
    value, at_normalize = draw(BAD)
    suffix = ""
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            before = draw(st.lists(GOOD, max_size=2))
            after = draw(st.lists(GOOD, max_size=2))
            value = [*before, value, *after]
            if draw(st.booleans()):
                value = tuple(value)
            suffix = f"[{len(before)}]{suffix}"
        else:
            key = draw(KEYS)
            others = draw(
                st.dictionaries(KEYS.filter(lambda k, key=key: k != key), GOOD, max_size=2)
            )
            value = {**others, key: value}
            suffix = f".{key}{suffix}"
    key = draw(KEYS)
    return {key: value}, f"properties.{key}{suffix}", at_normalize


@SETTINGS
@given(poisoned())
def test_rejected_values_raise_validation_errors_naming_the_path(
    case: Tuple[dict, str, bool],
) -> None:
    properties, path, at_normalize = case
    try:
        ENCODER.encode(Track(user_id="u", event="e", properties=properties))
    except ValidationError as exc:
        assert str(exc).startswith(f"{path}:"), (str(exc), path)
    else:
        raise AssertionError(f"accepted {properties!r}")
    if at_normalize:
        try:
            normalize(properties, "properties")
        except ValidationError as exc:
            assert str(exc).startswith(f"{path}:")
        else:
            raise AssertionError(f"normalize accepted {properties!r}")
