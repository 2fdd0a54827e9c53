"""pytest plugin (registered through the ``pytest11`` entry point): the ``analytics_collector``
fixture, so any project's tests can send events to a real local endpoint and assert on them
without a network or a Segment account.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from durable_analytics.testing import Collector

__all__ = ["analytics_collector"]


@pytest.fixture
def analytics_collector() -> Iterator[Collector]:
    """A started :class:`~durable_analytics.testing.Collector` (any write key accepted),
    stopped after the test; point a client at ``analytics_collector.url``."""
    collector = Collector().start()
    try:
        yield collector
    finally:
        collector.stop()
