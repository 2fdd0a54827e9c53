"""Every client option, defined once: its name, segment's name for it, its default and why,
and the check that turns what a caller passed into a valid value.

:class:`Config` is one frozen value. ``Client(...)``, the module-level settings
(``durable_analytics.flush_at = 50``) and the command line all build it with
:meth:`Config.from_options`, so a default or a check cannot drift between them.

Adding an option is a one-place change: add a field to :class:`Config` below with
``option(default, why, check, aliases=...)``. ``Client`` accepts it as a keyword, the module
gets a setting of that name (and one per alias), and ``docs/api.md`` should get its row. Only
an option that needs other options to be resolved (see ``_resolve``) needs more.
"""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .committer import DEFAULT_BUFFER_INTERVAL
from .environment import ENV_WRITE_KEY, VARIABLES, lookup
from .errors import ConfigError
from .limits import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_QUEUE_BYTES, MAX_REQUEST_BYTES
from .policy import DEFAULT_MAX_IN_FLIGHT, RetryPolicy

__all__ = [
    "Config",
    "DEFAULT_ENDPOINT",
    "DEFAULT_OAUTH_SERVER",
    "SEGMENT_POSITIONAL",
    "check_endpoint",
    "option_names",
]

log = logging.getLogger("durable_analytics")

DEFAULT_ENDPOINT = "https://api.segment.io"
DEFAULT_OAUTH_SERVER = "https://oauth2.segment.io"

#: segment-analytics-python's ``Client`` parameters, in its positional order.
SEGMENT_POSITIONAL = (
    "write_key",
    "host",
    "debug",
    "max_queue_size",
    "send",
    "on_error",
    "gzip",
    "max_retries",
    "sync_mode",
    "timeout",
    "proxies",
    "thread",
    "upload_size",
    "upload_interval",
    "log_handler",
    "oauth_client_id",
    "oauth_client_key",
    "oauth_key_id",
    "oauth_auth_server",
    "oauth_scope",
    "max_total_backoff_duration",
    "max_rate_limit_duration",
)

Check = Callable[[str, Any], Any]
Timeout = Union[float, Tuple[float, float]]


# --------------------------------------------------------------------------------------------
# Checks: each takes the option's name and the value passed, returns the value to keep.


def check_endpoint(endpoint: Any, name: str = "endpoint") -> str:
    """An http(s) base URL without a trailing slash; a bare ``host:port`` gets ``https://``."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigError(f"{name} must be a URL such as {DEFAULT_ENDPOINT}")
    text = endpoint.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={endpoint!r} is not an http(s) URL: use e.g. {DEFAULT_ENDPOINT}")
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not contain credentials: pass the write key instead")
    return text


def _url(name: str, value: Any) -> str:
    return check_endpoint(value, name)


def _write_key(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "write_key is required: Client('YOUR_WRITE_KEY'), or set "
            f"durable_analytics.write_key before the first call, or {ENV_WRITE_KEY} in the "
            "environment"
        )
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(name: str, value: Any) -> Any:
    if not _number(value) or not value > 0:
        raise ConfigError(f"{name}={value!r}: use a positive number")
    return value


def _seconds(name: str, value: Any) -> Any:
    if not _number(value) or not value >= 0:
        raise ConfigError(f"{name}={value!r}: use a number of seconds >= 0")
    return value


def _optional_seconds(name: str, value: Any) -> Any:
    return None if value is None else _seconds(name, value)


def _count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}={value!r}: use a positive integer")
    return value


def _optional_count(name: str, value: Any) -> Optional[int]:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConfigError(f"{name}={value!r}: use a positive integer, or None for no limit")
    return value


def _flag(name: str, value: Any) -> bool:
    return bool(value)


def _callback(name: str, value: Any) -> Any:
    """A function, or nothing: a falsy value (``False``, ``0``) means none, as in segment."""
    if not value:
        return None
    if not callable(value):
        raise ConfigError(f"{name}={value!r}: use a function, or None")
    return value


def _text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: use a string")
    return value


def _path(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name}={value!r}: use a file path (str or pathlib.Path), or None")
    return value


def _timeout(name: str, value: Any) -> Timeout:
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2:
        raise ConfigError(f"{name}={value!r}: use seconds, or a (connect, read) pair")
    for part in pair:
        _positive(name, part)
    return value


def _proxies(name: str, value: Any) -> Optional[Dict[str, str]]:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}={value!r}: use a dict such as {{'https': 'http://host:3128'}}")
    return dict(value)


def _as_given(name: str, value: Any) -> Any:
    """Checked where it is used (``default_context`` by the message encoder)."""
    return value


def _handler(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, logging.Handler):
        raise ConfigError(f"{name}={value!r}: use a logging.Handler, or None")
    return value


def _verify(name: str, value: Any) -> Union[bool, str]:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return bool(value)


def _policy(name: str, value: Any) -> Optional[RetryPolicy]:
    if value is not None and not isinstance(value, RetryPolicy):
        raise ConfigError(f"{name}={value!r}: use durable_analytics.RetryPolicy(...), or None")
    return value


def _choice(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            listed = map(repr, choices)
            wanted = " or ".join(listed) if len(choices) == 2 else "one of " + ", ".join(listed)
            raise ConfigError(f"{name}={value!r}: use {wanted}")
        return value

    return check


def option(
    default: Any,
    why: str,
    check: Check,
    *,
    aliases: Tuple[str, ...] = (),
    refuse_none: Tuple[str, ...] = (),
) -> Any:
    """A :class:`Config` field. ``aliases`` are segment's names for it. ``None`` passed for a
    name means 'the default', except for the names in ``refuse_none`` (segment refuses it)."""
    return field(
        default=default,
        metadata={"why": why, "check": check, "aliases": aliases, "refuse_none": refuse_none},
    )


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The resolved, checked configuration of one client. Build it with :meth:`from_options`."""

    write_key: str = option(None, "required: it names the source; never logged", _write_key)
    endpoint: str = option(
        DEFAULT_ENDPOINT,
        "Segment's HTTP API; any compatible collector works",
        _url,
        aliases=("host",),
    )
    queue_path: Optional[Union[str, os.PathLike]] = option(
        None,
        "one private file per destination (write key and endpoint) in the user's data directory",
        _path,
    )
    durability: str = option(
        "normal",
        "WAL with synchronous=NORMAL survives a crash or kill -9; 'full' also power loss, "
        "at one fsync per commit; 'buffered' returns before the commit, for speed, and a "
        "kill -9 can lose the last buffer_interval of calls",
        _choice("normal", "full", "buffered"),
    )
    buffer_interval: float = option(
        DEFAULT_BUFFER_INTERVAL,
        "durability='buffered': what a kill -9 can lose, kept to a few milliseconds",
        _positive,
    )
    flush_at: int = option(
        20,
        "a batch is worth a request well before the 500-message cap, and events are not held",
        _count,
        aliases=("upload_size",),
    )
    flush_interval: float = option(
        5.0,
        "bounds how long a message waits for company in a quiet process",
        _positive,
        aliases=("upload_interval",),
    )
    max_batch_messages: int = option(
        500, "few requests under load, far below the API's 2,500 per batch", _count
    )
    max_batch_bytes: int = option(
        MAX_REQUEST_BYTES, "the API refuses request bodies over 500 KB", _count
    )
    max_message_bytes: int = option(
        DEFAULT_MAX_MESSAGE_BYTES, "the API refuses events over 32 KB", _count
    )
    max_queue_bytes: Optional[int] = option(
        DEFAULT_MAX_QUEUE_BYTES,
        "an outage must not fill the disk; 1 GB is days of traffic",
        _optional_count,
    )
    max_queue_messages: Optional[int] = option(
        None,
        "disk space is the bound that matters; a count is optional (segment's 10,000 is not "
        "applied: its queue was in memory)",
        _optional_count,
        aliases=("max_queue_size",),
    )
    overflow: str = option(
        "drop_newest",
        "as segment: the call that does not fit returns (False, msg) and what was recorded "
        "is kept; 'drop_oldest' keeps the newest data instead, 'raise' raises QueueFull",
        _choice("drop_newest", "drop_oldest", "raise"),
    )
    timeout: Timeout = option(
        15.0, "segment's default; a (connect, read) pair is accepted", _timeout
    )
    gzip: bool = option(
        True, "every Segment-compatible server accepts it; 5-10x less traffic", _flag
    )
    verify: Union[bool, str] = option(True, "TLS is verified; a CA bundle path works", _verify)
    proxies: Optional[Dict[str, str]] = option(None, "requests' proxies mapping", _proxies)
    max_retries: int = option(
        10,
        "after this many failed attempts on_error hears of it once; the message is still "
        "retried until max_retry_age",
        _count,
    )
    max_retry_age: Optional[float] = option(
        None,
        "how long a message is retried before it becomes a dead letter (kept on disk); "
        "None: the RetryPolicy's 7 days (segment's 12 hours is not applied)",
        _optional_seconds,
        aliases=("max_total_backoff_duration",),
        refuse_none=("max_total_backoff_duration",),
    )
    retry_policy: RetryPolicy = option(None, "RetryPolicy(): see retry.py", _policy)
    max_rate_limit_duration: float = option(
        1800.0,
        "accepted for segment; rate-limited messages are retried within max_retry_age and "
        "never dropped, so it has no separate effect",
        _seconds,
        refuse_none=("max_rate_limit_duration",),
    )
    auth_pause: float = option(
        300.0, "after 401/403 sending pauses; a config error must not destroy data", _positive
    )
    lease_seconds: float = option(
        None, "None: max(30, request deadline + 15): a batch is never sent twice at once", _positive
    )
    max_in_flight: int = option(
        DEFAULT_MAX_IN_FLIGHT,
        "batches on the wire at once per process: a far server still takes 10,000+ events/s; "
        "1 sends one batch at a time (delivery order is never promised)",
        _count,
    )
    flush_timeout: float = option(
        10.0, "flush(), join() and shutdown() never hang (segment's flush has no bound)", _positive
    )
    exit_timeout: float = option(
        3.0, "exit is not held long; what is left stays on disk for the next run", _seconds
    )
    handle_sigterm: bool = option(
        False, "True: SIGTERM runs a bounded shutdown, then the previous handler", _flag
    )
    send: bool = option(True, "False validates and discards: for tests and dry runs", _flag)
    sync_mode: bool = option(
        False, "True delivers in the caller's thread, bounded by flush_timeout", _flag
    )
    debug: bool = option(False, "quiet by default", _flag)
    on_error: Optional[Callable[..., Any]] = option(
        None, "on_error(error, messages) from the delivery thread", _callback
    )
    on_delivery: Optional[Callable[..., Any]] = option(
        None, "on_delivery(messages) after each accepted batch", _callback
    )
    before_send: Optional[Callable[..., Any]] = option(
        None,
        "before_send(message) -> message or None, before anything is stored: scrub or drop "
        "what must never reach the disk; a failing hook keeps the message as it was",
        _callback,
    )
    default_context: Optional[Mapping[str, Any]] = option(
        None, "merged into every message's context; the call's context wins", _as_given
    )
    log_handler: Optional[logging.Handler] = option(
        None, "added to the durable_analytics logger", _handler
    )
    thread: int = option(
        1, "accepted for segment; one delivery thread per process is enough", _count
    )
    oauth_client_id: Optional[str] = option(
        None, "OAuth: with oauth_client_key and oauth_key_id, a bearer token replaces Basic", _text
    )
    oauth_client_key: Optional[str] = option(None, "OAuth: the PEM private key (RS256)", _text)
    oauth_key_id: Optional[str] = option(None, "OAuth: the key's id (the JWT kid)", _text)
    oauth_auth_server: str = option(DEFAULT_OAUTH_SERVER, "Segment's token server", _url)
    oauth_scope: str = option("tracking_api:write", "the scope the API needs", _text)

    @classmethod
    def from_options(cls, **given: Any) -> Config:
        """Check the options a caller passed (segment's names included) and resolve defaults.

        Raises :class:`ConfigError` naming the option and what to use; ``TypeError`` for a
        name that is not an option, as a function call would.
        """
        values: Dict[str, Any] = {}
        for spec in fields(cls):
            names = [n for n in (spec.name, *spec.metadata["aliases"]) if n in given]
            passed = {n: given.pop(n) for n in names}
            for name in spec.metadata["refuse_none"]:
                if name in passed and passed[name] is None:
                    raise ConfigError(f"{name}=None: use a number of seconds >= 0")
            explicit = {n: v for n, v in passed.items() if v is not None}
            if len({_identity(v) for v in explicit.values()}) > 1:
                raise ConfigError(
                    f"{'= and '.join(explicit)}= name the same setting: pass only one"
                )
            if explicit:  # errors name the option itself, whichever name was used
                values[spec.name] = spec.metadata["check"](spec.name, next(iter(explicit.values())))
            elif spec.name in VARIABLES:  # then the environment, then the default
                values.update(_from_environment(spec))
        if given:
            raise TypeError(f"unexpected option(s): {', '.join(sorted(given))}")
        return _resolve(cls(**values))

    @classmethod
    def from_call(cls, args: Tuple[Any, ...], options: Dict[str, Any]) -> Config:
        """``Client(*args, **options)``: positional arguments in segment's order."""
        if len(args) > len(SEGMENT_POSITIONAL):
            raise TypeError(
                f"Client() takes at most {len(SEGMENT_POSITIONAL)} positional arguments "
                f"({len(args)} given); pass the others by keyword"
            )
        for name, value in zip(SEGMENT_POSITIONAL, args):
            if name in options:
                raise TypeError(f"Client() got multiple values for argument {name!r}")
            options[name] = value
        return cls.from_options(**options)

    def describe(self) -> Dict[str, Tuple[Any, str]]:
        """Each option's default and the reason for it (for docs and ``--help``)."""
        return {f.name: (f.default, f.metadata["why"]) for f in fields(self)}

    @property
    def connect_timeout(self) -> float:
        return self.timeout[0] if isinstance(self.timeout, tuple) else self.timeout

    @property
    def read_timeout(self) -> float:
        return self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout

    @property
    def oauth(self) -> bool:
        """Whether a bearer token from the OAuth server replaces Basic auth."""
        return self.oauth_client_id is not None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'<hidden>' if _secret(f.name) else repr(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name) != f.default or f.name == "endpoint"
        )
        return f"Config({shown})"


def _from_environment(spec: Any) -> Dict[str, Any]:
    """The option's value from its environment variable, checked; ``{}`` when it is unset
    (the default applies; a write key is required)."""
    found = lookup(spec.name)
    if found is None:
        return {"write_key": _write_key("write_key", None)} if spec.name == "write_key" else {}
    variable, value = found
    try:
        return {spec.name: spec.metadata["check"](spec.name, value)}
    except ConfigError as exc:
        shown = "" if _secret(spec.name) else f": {exc}"
        raise ConfigError(f"{variable} is not a valid {spec.name}{shown}") from None


def _secret(name: str) -> bool:
    return name in ("write_key", "oauth_client_key")


def _identity(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def _resolve(config: Config) -> Config:
    """What depends on several options: checked together, derived defaults filled in."""
    if config.max_message_bytes > config.max_batch_bytes:
        raise ConfigError("max_message_bytes must not exceed max_batch_bytes")
    if config.durability == "buffered" and config.sync_mode:
        raise ConfigError(
            "durability='buffered' returns before a message is stored, sync_mode=True "
            "only once it is delivered: choose one"
        )
    policy = config.retry_policy
    if policy is not None and config.max_retry_age is not None:
        raise ConfigError("pass max_retry_age inside retry_policy=, not both")
    if policy is None:
        age = config.max_retry_age
        policy = RetryPolicy() if age is None else RetryPolicy(max_retry_age=age)
    oauth = (config.oauth_client_id, config.oauth_client_key, config.oauth_key_id)
    if any(oauth) and not all(oauth):
        raise ConfigError(
            "OAuth needs oauth_client_id, oauth_client_key and oauth_key_id together: "
            "set all three, or none for Basic auth with the write key"
        )
    if config.thread > 1:
        log.warning(
            "thread=%d: durable-analytics uses one delivery thread per process; "
            "batches of up to %d messages make more unnecessary",
            config.thread,
            config.max_batch_messages,
        )
    from .deadline import check_lease, lease_for
    from .transport import request_deadline

    deadline = request_deadline(config.timeout)
    lease = lease_for(deadline) if config.lease_seconds is None else config.lease_seconds
    too_short = check_lease(lease, deadline)
    if too_short:
        raise ConfigError(too_short)
    return replace(
        config,
        retry_policy=policy,
        max_retry_age=policy.max_retry_age,
        lease_seconds=lease,
        oauth_client_id=config.oauth_client_id if all(oauth) else None,
    )


def option_names() -> Dict[str, str]:
    """Every accepted name (aliases included) and the option it sets."""
    names: Dict[str, str] = {}
    for spec in fields(Config):
        for name in (spec.name, *spec.metadata["aliases"]):
            names[name] = spec.name
    return names


def defaults() -> Dict[str, Any]:
    """Each option's default (``None`` for an alias: unset)."""
    out = {}
    for spec in fields(Config):
        out[spec.name] = None if spec.default is MISSING else spec.default
        for alias in spec.metadata["aliases"]:
            out[alias] = None
    return out
