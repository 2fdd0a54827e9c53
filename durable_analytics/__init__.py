"""durable-analytics: Segment-compatible analytics whose queue lives on disk.

``import durable_analytics as analytics`` works like segment-analytics-python's module: set
``analytics.write_key``, then call ``analytics.track(...)``. Or create a :class:`Client`.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any, Optional

from ._version import __version__
from .client import Client
from .config import DEFAULT_ENDPOINT, Config, defaults, option_names
from .errors import (
    AnalyticsError,
    AuthError,
    ConfigError,
    DeliveryError,
    FieldTypeError,
    MessageTooLarge,
    QueueCorrupt,
    QueueError,
    QueueFull,
    QueueLocked,
    RejectedError,
    TransientError,
    ValidationError,
)
from .messages import Alias, Group, Identify, Message, Page, Screen, Track
from .result import CallResult
from .retry import RetryPolicy
from .signals import install_signal_handlers

__all__ = [
    "__version__",
    "Client",
    "DEFAULT_ENDPOINT",
    "RetryPolicy",
    "Config",
    "CallResult",
    "Message",
    "Identify",
    "Track",
    "Page",
    "Screen",
    "Group",
    "Alias",
    "AnalyticsError",
    "ConfigError",
    "ValidationError",
    "FieldTypeError",
    "MessageTooLarge",
    "QueueError",
    "QueueFull",
    "QueueCorrupt",
    "QueueLocked",
    "DeliveryError",
    "TransientError",
    "RejectedError",
    "AuthError",
    "identify",
    "track",
    "page",
    "screen",
    "group",
    "alias",
    "enqueue",
    "flush",
    "join",
    "shutdown",
    "install_signal_handlers",
    "default_client",
    "SETTINGS",
]

#: Module-level settings read when the default client is created: every option of
#: :class:`Config` and segment's name for it. Each starts at its default (an alias at ``None``).
SETTINGS = tuple(option_names())
_DEFAULTS = defaults()
globals().update(_DEFAULTS)

# The settings segment-analytics-python users set most, typed for editors and checkers.
write_key: Optional[str]
host: Optional[str]
endpoint: str
on_error: Any
debug: bool
send: bool
sync_mode: bool
gzip: bool
timeout: Any
max_retries: int
max_queue_size: Optional[int]

default_client: Optional[Client] = None
_default_lock = threading.Lock()


def _client() -> Client:
    """The default client, created from the module settings on first use."""
    global default_client
    client = default_client
    if client is None:
        with _default_lock:
            if default_client is None:
                default_client = Client(config=Config.from_options(**_settings()))
            client = default_client
    return client


def _settings() -> dict:
    """The module settings that differ from their defaults: those are the ones set."""
    module = sys.modules[__name__].__dict__
    return {name: module[name] for name in SETTINGS if module[name] is not _DEFAULTS[name]}


def _retire_default_client() -> None:
    """A setting changed: the next call builds a client with it. Nothing queued is lost and
    the assignment never waits for the network: the old client retires (its batch on the
    wire is settled in the background), and its messages stay in the queue file."""
    global default_client
    with _default_lock:
        old, default_client = default_client, None
    if old is not None:
        old.retire()


def identify(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.identify`` on the default client."""
    return _client().identify(*args, **kwargs)


def track(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.track`` on the default client."""
    return _client().track(*args, **kwargs)


def page(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.page`` on the default client."""
    return _client().page(*args, **kwargs)


def screen(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.screen`` on the default client."""
    return _client().screen(*args, **kwargs)


def group(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.group`` on the default client."""
    return _client().group(*args, **kwargs)


def alias(*args: Any, **kwargs: Any) -> CallResult:
    """``Client.alias`` on the default client."""
    return _client().alias(*args, **kwargs)


def enqueue(message: Message) -> CallResult:
    """``Client.enqueue`` on the default client."""
    return _client().enqueue(message)


def flush(timeout: Optional[float] = None) -> bool:
    """``Client.flush`` on the default client, created first if need be (as segment does)."""
    return _client().flush(timeout)


def join() -> None:
    """segment-analytics-python's ``join``: a bounded flush."""
    flush()


def shutdown(timeout: Optional[float] = None) -> bool:
    """``Client.shutdown`` on the default client, which is then forgotten."""
    global default_client
    with _default_lock:
        client, default_client = default_client, None
    return True if client is None else client.shutdown(timeout)


class _SettingsModule(types.ModuleType):
    """Makes ``durable_analytics.<setting> = value`` take effect even after the first call.

    segment-analytics-python silently ignores a setting changed after its default client
    exists; here the default client is retired and the next call uses the new value.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in SETTINGS and self.__dict__.get("default_client") is not None:
            _retire_default_client()


sys.modules[__name__].__class__ = _SettingsModule
