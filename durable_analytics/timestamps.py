"""Timestamps in the form the wire contract asks for (ISO 8601, offset, milliseconds).

Apart from the messages because parsing what callers pass, and reading the clock cheaply for
the common "now", are their own concern.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Optional, Tuple, Union

from .errors import FieldTypeError, ValidationError

__all__ = ["Timestamp", "format_timestamp"]

Timestamp = Union[_dt.datetime, str]

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
