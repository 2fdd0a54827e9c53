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
from .client import DEFAULT_ENDPOINT, Client
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
from .limits import DEFAULT_MAX_QUEUE_BYTES
from .messages import Alias, Group, Identify, Message, Page, Screen, Track
from .retry import RetryPolicy

__all__ = [
    "__version__",
    "Client",
    "DEFAULT_ENDPOINT",
    "RetryPolicy",
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
    "default_client",
    "SETTINGS",
]

#: Module-level settings read when the default client is created (segment-style names work).
SETTINGS = (
    "write_key",
    "endpoint",
    "host",
    "queue_path",
    "durability",
    "flush_at",
    "flush_interval",
    "upload_size",
    "upload_interval",
    "max_queue_size",
    "max_queue_bytes",
    "overflow",
    "gzip",
    "timeout",
    "max_retries",
    "proxies",
    "thread",
    "send",
    "sync_mode",
    "debug",
    "on_error",
    "on_delivery",
    "default_context",
    "log_handler",
)

write_key: Optional[str] = None
endpoint: Optional[str] = None
host: Optional[str] = None
queue_path: Optional[str] = None
durability: str = "normal"
flush_at: Optional[int] = None
flush_interval: Optional[float] = None
upload_size: Optional[int] = None
upload_interval: Optional[float] = None
max_queue_size: Optional[int] = None
max_queue_bytes: Optional[int] = DEFAULT_MAX_QUEUE_BYTES
overflow: str = "drop_oldest"
gzip: bool = True
timeout: float = 15.0
max_retries: int = 10
proxies: Optional[dict] = None
thread: int = 1
send: bool = True
sync_mode: bool = False
debug: bool = False
on_error: Any = None
on_delivery: Any = None
default_context: Any = None
log_handler: Any = None

default_client: Optional[Client] = None
_default_lock = threading.Lock()


def _client() -> Client:
    """The default client, created from the module settings on first use."""
    global default_client
    client = default_client
    if client is None:
        with _default_lock:
            if default_client is None:
                module = sys.modules[__name__]
                options = {name: getattr(module, name) for name in SETTINGS}
                default_client = Client(options.pop("write_key"), **options)
            client = default_client
    return client


def _retire_default_client() -> None:
    """A setting changed: the next call builds a client with it. Nothing queued is lost:
    the old client stops without waiting, and its messages stay in the queue file."""
    global default_client
    with _default_lock:
        old, default_client = default_client, None
    if old is not None:
        old.shutdown(timeout=0)


def identify(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.identify`` on the default client."""
    return _client().identify(*args, **kwargs)


def track(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.track`` on the default client."""
    return _client().track(*args, **kwargs)


def page(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.page`` on the default client."""
    return _client().page(*args, **kwargs)


def screen(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.screen`` on the default client."""
    return _client().screen(*args, **kwargs)


def group(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.group`` on the default client."""
    return _client().group(*args, **kwargs)


def alias(*args: Any, **kwargs: Any) -> Optional[str]:
    """``Client.alias`` on the default client."""
    return _client().alias(*args, **kwargs)


def enqueue(message: Message) -> Optional[str]:
    """``Client.enqueue`` on the default client."""
    return _client().enqueue(message)


def flush(timeout: Optional[float] = None) -> bool:
    """``Client.flush`` on the default client (True at once if none was created)."""
    return True if default_client is None else default_client.flush(timeout)


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
