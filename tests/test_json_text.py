"""The two JSON encoders: the standard library's (the default) and orjson (the ``fast``
extra) accept and refuse the same values and produce the same JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_analytics import json_text
from durable_analytics.errors import ValidationError
from durable_analytics.messages import Encoder, Track

PROPERTIES = {"plan": "Enterprise", "amount": 42.5, "currency": "USD", "coupon": "WINTER"}

needs_orjson = pytest.mark.skipif(json_text.orjson_dumps is None, reason="orjson not installed")

ENCODERS = [
    pytest.param(json_text.stdlib_dumps, id="stdlib"),
    pytest.param(json_text.orjson_dumps, id="orjson", marks=needs_orjson),
]

text = st.text(st.characters(exclude_categories=("Cs",)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@needs_orjson
@settings(max_examples=300, deadline=None)
@given(values)
def test_both_encoders_write_the_same_json(value: Any) -> None:
    ours, theirs = json_text.stdlib_dumps(value), json_text.orjson_dumps(value)  # type: ignore[misc]
    assert json.loads(ours) == json.loads(theirs) == value


@needs_orjson
def test_a_typical_message_is_the_same_text_byte_for_byte() -> None:
    wire = Encoder().to_wire(Track(user_id="u-1", event="Bought ü €", properties=PROPERTIES))
    wire["properties"] = {**PROPERTIES, "note": 'tab\t"quoted" \\ \x01 line\n', "n": -0.0}
    assert json_text.orjson_dumps(wire) == json_text.stdlib_dumps(wire)  # type: ignore[misc]


@pytest.mark.parametrize("dumps", ENCODERS)
def test_values_beyond_orjson_go_through_the_standard_library(dumps: Callable) -> None:
    assert dumps({"big": 2**70}) == '{"big":1180591620717411303424}'


@pytest.mark.parametrize("dumps", ENCODERS)
def test_the_encoder_refuses_the_same_text_on_both_paths(
    dumps: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_text, "dumps", dumps)
    encoder = Encoder()
    good = encoder.encode(Track(user_id="u", event="e", properties=PROPERTIES))
    assert json.loads(good.json)["properties"] == PROPERTIES
    assert good.size == len(good.json.encode("utf-8"))
    with pytest.raises(ValidationError, match="properties.bad"):
        encoder.encode(Track(user_id="u", event="e", properties={"bad": "lone \ud800"}))


def test_the_standard_library_is_the_default_without_orjson() -> None:
    code = (
        "import sys; sys.modules['orjson'] = None\n"
        "from durable_analytics import json_text\n"
        "assert json_text.orjson_dumps is None and json_text.dumps is json_text.stdlib_dumps\n"
        "print(json_text.dumps({'a': [1, 2.5, 'x']}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, '{"a":[1,2.5,"x"]}'), done.stderr


@needs_orjson
def test_orjson_is_used_when_installed() -> None:
    assert json_text.dumps is json_text.orjson_dumps
