"""Client options from ``DURABLE_ANALYTICS_*`` environment variables, as the command line reads
them, so that ``Client()`` with no arguments works in a deployment that sets them.

Precedence, the same for ``Client``, the module-level API and the command line: an explicit
argument (or module setting), then the environment, then the default. An empty variable
counts as unset. Only the process environment is read: no ``.env`` file, ever (loading one is
the application's decision). The write key is never logged, nor echoed in an error.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "ENV_WRITE_KEY", "ENV_ENDPOINT", "ENV_QUEUE", "VARIABLES", "lookup"]

ENV_PREFIX = "DURABLE_ANALYTICS_"
ENV_WRITE_KEY = ENV_PREFIX + "WRITE_KEY"
ENV_ENDPOINT = ENV_PREFIX + "ENDPOINT"
ENV_QUEUE = ENV_PREFIX + "QUEUE"

Parse = Callable[[str], Any]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _text(raw: str) -> str:
    return raw


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError("use an integer") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError("use a number") from None


def _optional_integer(raw: str) -> Optional[int]:
    return None if raw.lower() == "none" else _integer(raw)


def _optional_number(raw: str) -> Optional[float]:
    return None if raw.lower() == "none" else _number(raw)


def _flag(raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"use one of {', '.join(_TRUE + _FALSE)}")


def _timeout(raw: str) -> Any:
    """Seconds, or ``connect,read``."""
    parts = [_number(part) for part in raw.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


#: Each option the environment can set: its variable and how its text is read.
VARIABLES: Dict[str, Tuple[str, Parse]] = {
    "write_key": (ENV_WRITE_KEY, _text),
    "endpoint": (ENV_ENDPOINT, _text),
    "queue_path": (ENV_QUEUE, _text),
    "durability": (ENV_PREFIX + "DURABILITY", _text),
    "flush_at": (ENV_PREFIX + "FLUSH_AT", _integer),
    "flush_interval": (ENV_PREFIX + "FLUSH_INTERVAL", _number),
    "max_queue_bytes": (ENV_PREFIX + "MAX_QUEUE_BYTES", _optional_integer),
    "max_queue_messages": (ENV_PREFIX + "MAX_QUEUE_MESSAGES", _optional_integer),
    "overflow": (ENV_PREFIX + "OVERFLOW", _text),
    "timeout": (ENV_PREFIX + "TIMEOUT", _timeout),
    "gzip": (ENV_PREFIX + "GZIP", _flag),
    "max_retries": (ENV_PREFIX + "MAX_RETRIES", _integer),
    "max_retry_age": (ENV_PREFIX + "MAX_RETRY_AGE", _optional_number),
    "flush_timeout": (ENV_PREFIX + "FLUSH_TIMEOUT", _number),
    "exit_timeout": (ENV_PREFIX + "EXIT_TIMEOUT", _number),
    "send": (ENV_PREFIX + "SEND", _flag),
    "sync_mode": (ENV_PREFIX + "SYNC_MODE", _flag),
    "debug": (ENV_PREFIX + "DEBUG", _flag),
}


def lookup(option: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Tuple[str, Any]]:
    """``(variable, value)`` when ``option``'s variable is set and not empty, else ``None``.

    Raises :class:`ConfigError` naming the variable when its text cannot be read; the text
    itself is shown, except the write key's.
    """
    entry = VARIABLES.get(option)
    if entry is None:
        return None
    variable, parse = entry
    raw = (os.environ if environ is None else environ).get(variable, "").strip()
    if not raw:
        return None
    try:
        return variable, parse(raw)
    except ConfigError as exc:
        shown = "<hidden>" if option == "write_key" else repr(raw)
        raise ConfigError(f"{variable}={shown}: {exc}") from None
