"""Every client option, defined once: its name, segment's name for it, its default and why,
and the check that turns what a caller passed into a valid value.

:class:`Config` is one frozen value. ``Client(...)``, the module-level settings
(``durable_analytics.flush_at = 50``) and the command line all build it with
:meth:`Config.from_options`, so a default or a check cannot drift between them.

Adding an option is a one-place change: add a field to :class:`Config` below with
``option(default, why, check, aliases=...)``. ``Client`` accepts it as a keyword, the module
gets a setting of that name (and one per alias), and ``docs/api.md`` should get its row. Only
an option that needs other options to be resolved (see ``_resolve``) needs more. The check of
each kind of value is in ``option_checks``; ``DEFAULT_ENDPOINT`` and ``check_endpoint`` are
re-exported here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from . import option_checks as checks
from .committer import DEFAULT_BUFFER_INTERVAL
from .environment import VARIABLES, lookup
from .errors import ConfigError
from .limits import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_QUEUE_BYTES, MAX_REQUEST_BYTES
from .option_checks import DEFAULT_ENDPOINT, check_endpoint
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


def option(
    default: Any,
    why: str,
    check: checks.Check,
    *,
    aliases: Tuple[str, ...] = (),
    refuse_none: Tuple[str, ...] = (),
    none_is_a_value: bool = False,
) -> Any:
    """A :class:`Config` field. ``aliases`` are segment's names for it. ``None`` passed for a
    name means 'the default', except for the names in ``refuse_none`` (segment refuses it),
    and for an option where ``None`` is a value of its own (``none_is_a_value``: no limit)."""
    return field(
        default=default,
        metadata={
            "why": why,
            "check": check,
            "aliases": aliases,
            "refuse_none": refuse_none,
            "none_is_a_value": none_is_a_value,
        },
    )


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The resolved, checked configuration of one client. Build it with :meth:`from_options`."""

    write_key: str = option(None, "required: it names the source; never logged", checks.write_key)
    endpoint: str = option(
        DEFAULT_ENDPOINT,
        "Segment's HTTP API; any compatible collector works",
        checks.url,
        aliases=("host",),
    )
    queue_path: Optional[Union[str, os.PathLike]] = option(
        None,
        "one private file per destination (write key and endpoint) in the user's data directory",
        checks.path,
    )
    durability: str = option(
        "normal",
        "WAL with synchronous=NORMAL survives a crash or kill -9; 'full' also power loss, "
        "at one fsync per commit; 'buffered' returns before the commit, for speed, and a "
        "kill -9 can lose the last buffer_interval of calls",
        checks.choice("normal", "full", "buffered"),
    )
    buffer_interval: float = option(
        DEFAULT_BUFFER_INTERVAL,
        "durability='buffered': what a kill -9 can lose, kept to a few milliseconds",
        checks.positive,
    )
    flush_at: int = option(
        20,
        "a batch is worth a request well before the 500-message cap, and events are not held",
        checks.count,
        aliases=("upload_size",),
    )
    flush_interval: float = option(
        5.0,
        "bounds how long a message waits for company in a quiet process",
        checks.positive,
        aliases=("upload_interval",),
    )
    max_batch_messages: int = option(
        500, "few requests under load, far below the API's 2,500 per batch", checks.count
    )
    max_batch_bytes: int = option(
        MAX_REQUEST_BYTES, "the API refuses request bodies over 500 KB", checks.count
    )
    max_message_bytes: int = option(
        DEFAULT_MAX_MESSAGE_BYTES, "the API refuses events over 32 KB", checks.count
    )
    max_queue_bytes: Optional[int] = option(
        DEFAULT_MAX_QUEUE_BYTES,
        "an outage must not fill the disk; 1 GB is days of traffic",
        checks.optional_count,
        none_is_a_value=True,
    )
    max_queue_messages: Optional[int] = option(
        None,
        "disk space is the bound that matters; a count is optional (segment's 10,000 is not "
        "applied: its queue was in memory)",
        checks.optional_count,
        aliases=("max_queue_size",),
    )
    overflow: str = option(
        "drop_newest",
        "as segment: the call that does not fit returns (False, msg) and what was recorded "
        "is kept; 'drop_oldest' keeps the newest data instead, 'raise' raises QueueFull",
        checks.choice("drop_newest", "drop_oldest", "raise"),
    )
    timeout: checks.Timeout = option(
        15.0, "segment's default; a (connect, read) pair is accepted", checks.timeout
    )
    gzip: bool = option(
        True, "every Segment-compatible server accepts it; 5-10x less traffic", checks.flag
    )
    verify: Union[bool, str] = option(
        True, "TLS is verified; a CA bundle path works", checks.verify
    )
    proxies: Optional[Dict[str, str]] = option(None, "requests' proxies mapping", checks.proxies)
    max_retries: int = option(
        10,
        "after this many failed attempts on_error hears of it once; the message is still "
        "retried until max_retry_age",
        checks.count,
    )
    max_retry_age: Optional[float] = option(
        None,
        "how long a message is retried before it becomes a dead letter (kept on disk); "
        "None: the RetryPolicy's 7 days (segment's 12 hours is not applied)",
        checks.optional_seconds,
        aliases=("max_total_backoff_duration",),
        refuse_none=("max_total_backoff_duration",),
    )
    retry_policy: RetryPolicy = option(None, "RetryPolicy(): see retry.py", checks.policy)
    max_rate_limit_duration: float = option(
        1800.0,
        "accepted for segment; rate-limited messages are retried within max_retry_age and "
        "never dropped, so it has no separate effect",
        checks.seconds,
        refuse_none=("max_rate_limit_duration",),
    )
    auth_pause: float = option(
        300.0, "after 401/403 sending pauses; a config error must not destroy data", checks.positive
    )
    lease_seconds: float = option(
        None,
        "None: max(30, request deadline + 15): a batch is never sent twice at once",
        checks.positive,
    )
    max_in_flight: int = option(
        DEFAULT_MAX_IN_FLIGHT,
        "batches on the wire at once per process: a far server still takes 10,000+ events/s; "
        "1 sends one batch at a time (delivery order is never promised)",
        checks.count,
    )
    flush_timeout: float = option(
        10.0,
        "flush(), join() and shutdown() never hang (segment's flush has no bound)",
        checks.positive,
    )
    exit_timeout: float = option(
        3.0, "exit is not held long; what is left stays on disk for the next run", checks.seconds
    )
    handle_sigterm: bool = option(
        False, "True: SIGTERM runs a bounded shutdown, then the previous handler", checks.flag
    )
    send: bool = option(True, "False validates and discards: for tests and dry runs", checks.flag)
    sync_mode: bool = option(
        False, "True delivers in the caller's thread, bounded by flush_timeout", checks.flag
    )
    debug: bool = option(False, "quiet by default", checks.flag)
    on_error: Optional[Callable[..., Any]] = option(
        None, "on_error(error, messages) from the delivery thread", checks.callback
    )
    on_delivery: Optional[Callable[..., Any]] = option(
        None, "on_delivery(messages) after each accepted batch", checks.callback
    )
    before_send: Optional[Callable[..., Any]] = option(
        None,
        "before_send(message) -> message or None, before anything is stored: scrub or drop "
        "what must never reach the disk; a failing hook keeps the message as it was",
        checks.callback,
    )
    default_context: Optional[Mapping[str, Any]] = option(
        None, "merged into every message's context; the call's context wins", checks.as_given
    )
    log_handler: Optional[logging.Handler] = option(
        None, "added to the durable_analytics logger", checks.handler
    )
    thread: int = option(
        1, "accepted for segment; one delivery thread per process is enough", checks.count
    )
    oauth_client_id: Optional[str] = option(
        None,
        "OAuth: with oauth_client_key and oauth_key_id, a bearer token replaces Basic",
        checks.text,
    )
    oauth_client_key: Optional[str] = option(
        None, "OAuth: the PEM private key (RS256)", checks.text
    )
    oauth_key_id: Optional[str] = option(None, "OAuth: the key's id (the JWT kid)", checks.text)
    oauth_auth_server: str = option(DEFAULT_OAUTH_SERVER, "Segment's token server", checks.url)
    oauth_scope: str = option("tracking_api:write", "the scope the API needs", checks.text)

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
            keep_none = spec.metadata["none_is_a_value"]
            explicit = {n: v for n, v in passed.items() if v is not None or keep_none}
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
        return (
            {"write_key": checks.write_key("write_key", None)} if spec.name == "write_key" else {}
        )
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
