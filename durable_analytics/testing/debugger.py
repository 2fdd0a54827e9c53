"""The debugger page: ``GET /`` on the collector's port shows each accepted event as it
arrives, like Segment's Debugger, so that a developer whose events do not show up can see what
their application really sends.

The page is plain HTML, CSS and JavaScript shipped in the package (``static/``); it polls
``GET /debugger/events?after=CURSOR`` for what arrived since its cursor, the counts and the
injected faults. Only ``GET`` and ``HEAD`` on these paths are the page's: everything else is
the batch API's. A page bound to a loopback address answers only requests whose ``Host`` is a
loopback name, so that a web site cannot read events through DNS rebinding.
"""

from __future__ import annotations

import functools
import ipaddress
from importlib import resources
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from .wire import Outcome

EVENTS_PATH = "/debugger/events"
MAX_EVENTS_PER_POLL = 1000
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/debugger.css": ("debugger.css", "text/css; charset=utf-8"),
    "/debugger.js": ("debugger.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Nothing but this origin: no CDN, no inline script, nothing fetched from the internet.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}

Snapshot = Callable[[int, int], dict[str, Any]]
"""(after, limit) -> the JSON the page polls for."""


def handles(method: str, target: str) -> bool:
    """Whether this request is the page's (GET or HEAD on one of its paths)."""
    path = urlsplit(target).path
    return method in ("GET", "HEAD") and (path in _STATIC or path == EVENTS_PATH)


def answer(target: str, host_header: Optional[str], bound_host: str, snapshot: Snapshot) -> Outcome:
    """The page, one of its files, or the events after the cursor in ``?after=``."""
    if not _host_allowed(host_header, bound_host):
        return Outcome(403, {"error": "the debugger page answers loopback host names only"})
    parts = urlsplit(target)
    if parts.path != EVENTS_PATH:
        name, content_type = _STATIC[parts.path]
        return Outcome(200, _static(name), headers=dict(_HEADERS), content_type=content_type)
    query = parse_qs(parts.query)
    try:
        after = int(query.get("after", ["0"])[0])
        limit = int(query.get("limit", [str(MAX_EVENTS_PER_POLL)])[0])
    except ValueError:
        return Outcome(400, {"error": "after and limit must be whole numbers"})
    limit = max(0, min(limit, MAX_EVENTS_PER_POLL))
    return Outcome(200, snapshot(after, limit), headers=dict(_HEADERS))


@functools.cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_allowed(host_header: Optional[str], bound_host: str) -> bool:
    """A collector bound to loopback answers loopback names only; one bound elsewhere was
    opened to the network on purpose and answers any name."""
    if not _is_loopback(bound_host):
        return True
    if not host_header:
        return False
    try:
        name = urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return False
    return name is not None and _is_loopback(name)
