"""The checks of the client options: pure functions, one per kind of value.

Each takes the option's name and the value passed and returns the value to keep, or raises
:class:`ConfigError` naming the option and what to use. They are apart from :mod:`config`
so the rules for a value can be read (and tested) without the options that use them; the
checks that need several options at once are ``config._resolve``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .environment import ENV_WRITE_KEY
from .errors import ConfigError
from .policy import RetryPolicy

__all__ = [
    "DEFAULT_ENDPOINT",
    "Check",
    "Timeout",
    "check_endpoint",
    "url",
    "write_key",
    "positive",
    "seconds",
    "optional_seconds",
    "count",
    "optional_count",
    "flag",
    "callback",
    "text",
    "path",
    "timeout",
    "proxies",
    "as_given",
    "handler",
    "verify",
    "policy",
    "choice",
]

#: Where messages go unless told otherwise; named here because the endpoint check suggests it.
DEFAULT_ENDPOINT = "https://api.segment.io"

Check = Callable[[str, Any], Any]
Timeout = Union[float, Tuple[float, float]]


def check_endpoint(endpoint: Any, name: str = "endpoint") -> str:
    """An http(s) base URL without a trailing slash; a bare ``host:port`` gets ``https://``."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigError(f"{name} must be a URL such as {DEFAULT_ENDPOINT}")
    base = endpoint.strip().rstrip("/")
    if "://" not in base:
        base = "https://" + base
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={endpoint!r} is not an http(s) URL: use e.g. {DEFAULT_ENDPOINT}")
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not contain credentials: pass the write key instead")
    return base


def url(name: str, value: Any) -> str:
    return check_endpoint(value, name)


def write_key(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "write_key is required: Client('YOUR_WRITE_KEY'), or set "
            f"durable_analytics.write_key before the first call, or {ENV_WRITE_KEY} in the "
            "environment"
        )
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(name: str, value: Any) -> Any:
    if not _number(value) or not value > 0:
        raise ConfigError(f"{name}={value!r}: use a positive number")
    return value


def seconds(name: str, value: Any) -> Any:
    if not _number(value) or not value >= 0:
        raise ConfigError(f"{name}={value!r}: use a number of seconds >= 0")
    return value


def optional_seconds(name: str, value: Any) -> Any:
    return None if value is None else seconds(name, value)


def count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}={value!r}: use a positive integer")
    return value


def optional_count(name: str, value: Any) -> Optional[int]:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConfigError(f"{name}={value!r}: use a positive integer, or None for no limit")
    return value


def flag(name: str, value: Any) -> bool:
    return bool(value)


def callback(name: str, value: Any) -> Any:
    """A function, or nothing: a falsy value (``False``, ``0``) means none, as in segment."""
    if not value:
        return None
    if not callable(value):
        raise ConfigError(f"{name}={value!r}: use a function, or None")
    return value


def text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: use a string")
    return value


def path(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name}={value!r}: use a file path (str or pathlib.Path), or None")
    return value


def timeout(name: str, value: Any) -> Timeout:
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2:
        raise ConfigError(f"{name}={value!r}: use seconds, or a (connect, read) pair")
    for part in pair:
        positive(name, part)
    return value


def proxies(name: str, value: Any) -> Optional[Dict[str, str]]:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}={value!r}: use a dict such as {{'https': 'http://host:3128'}}")
    return dict(value)


def as_given(name: str, value: Any) -> Any:
    """Checked where it is used (``default_context`` by the message encoder)."""
    return value


def handler(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, logging.Handler):
        raise ConfigError(f"{name}={value!r}: use a logging.Handler, or None")
    return value


def verify(name: str, value: Any) -> Union[bool, str]:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return bool(value)


def policy(name: str, value: Any) -> Optional[RetryPolicy]:
    if value is not None and not isinstance(value, RetryPolicy):
        raise ConfigError(f"{name}={value!r}: use durable_analytics.RetryPolicy(...), or None")
    return value


def choice(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            listed = map(repr, choices)
            wanted = " or ".join(listed) if len(choices) == 2 else "one of " + ", ".join(listed)
            raise ConfigError(f"{name}={value!r}: use {wanted}")
        return value

    return check
