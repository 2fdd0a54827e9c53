"""The shim that runs segment-analytics-python's own test files against durable_analytics.

The tests are imported from the installed wheel (``segment/analytics/test/``), never copied.
While they are imported and while each runs:

- ``segment.analytics`` is ``durable_analytics`` (the module: settings, ``default_client``,
  the calls) and ``segment.analytics.client`` a module whose ``Client`` is ours; segment's
  other modules stay its own (the tests that use them are skipped, see ``skipped.py``);
- a client given no host sends to the test's own collector on 127.0.0.1 (the wheel's tests
  would otherwise send to api.segment.io), and its queue file is in the test's temp dir;
- the module settings and the default client are reset after each test.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from typing import Any, Iterator

import pytest

import durable_analytics
from durable_analytics import Config
from durable_analytics.lifecycle import CLIENTS as _CLIENTS
from durable_analytics.testing import Collector

from .skipped import reason

pytest.importorskip("mock", reason="segment's test files import mock (test extra)")
import segment  # noqa: E402
import segment.analytics  # noqa: E402,F401
import segment.analytics.client  # noqa: E402,F401
import segment.analytics.consumer  # noqa: E402,F401
import segment.analytics.oauth_manager  # noqa: E402,F401
import segment.analytics.request  # noqa: E402,F401
import segment.analytics.test  # noqa: E402,F401  (the package of the files to run)
import segment.analytics.utils  # noqa: E402,F401
import segment.analytics.version  # noqa: E402,F401

_CLIENT_SHIM = types.ModuleType("segment.analytics.client")
_CLIENT_SHIM.Client = durable_analytics.Client  # type: ignore[attr-defined]
_ALIASES = {"segment.analytics": durable_analytics, "segment.analytics.client": _CLIENT_SHIM}


@contextlib.contextmanager
def pointed_at_durable_analytics() -> Iterator[None]:
    """``segment.analytics`` and ``segment.analytics.client`` name ours, then are restored."""
    saved = {name: sys.modules[name] for name in _ALIASES}
    package = sys.modules["segment"]
    saved_attribute = package.analytics  # type: ignore[attr-defined]
    sys.modules.update(_ALIASES)
    package.analytics = durable_analytics  # type: ignore[attr-defined]
    try:
        yield
    finally:
        sys.modules.update(saved)
        package.analytics = saved_attribute  # type: ignore[attr-defined]


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if "compat" not in item.nodeid or item.cls is None:
            continue
        why = reason(item.cls.__name__, item.name)
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def segment_names_point_here(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    original = Config.from_options.__func__  # type: ignore[attr-defined]

    def to_the_collector(cls: Any, **given: Any) -> Config:
        if given.get("host") is None and given.get("endpoint") is None:
            given.pop("endpoint", None)
            given["host"] = collector.url
        given.setdefault("flush_timeout", 5.0)
        return original(cls, **given)

    monkeypatch.setattr(Config, "from_options", classmethod(to_the_collector))
    settings = {name: getattr(durable_analytics, name) for name in durable_analytics.SETTINGS}
    before = set(_CLIENTS)
    logger = logging.getLogger("durable_analytics")
    handlers, level = list(logger.handlers), logger.level
    with pointed_at_durable_analytics():
        yield
    durable_analytics.shutdown(timeout=0)
    for client in set(_CLIENTS) - before:  # segment's tests never shut their clients down
        client.shutdown(timeout=0)
    for name, value in settings.items():
        setattr(durable_analytics, name, value)
    logger.handlers[:] = handlers  # debug=True added a stream handler
    logger.setLevel(level)
