"""JSON normalisation of the values a call carries (properties, traits, context).

Kept apart from the message classes because it is one rule applied everywhere: a value either
has one obvious JSON form, or it raises an error naming where it is, so nothing is silently
dropped on the way to the disk.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any, Dict

from .errors import FieldTypeError, ValidationError

__all__ = ["normalize", "json_mapping", "find_bad_text"]


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


def find_bad_text(value: Any, path: str) -> None:
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
            find_bad_text(key, f"{path} key")
            find_bad_text(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            find_bad_text(item, f"{path}[{i}]")


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


def json_mapping(value: Any, field: str) -> Dict[str, Any]:
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
