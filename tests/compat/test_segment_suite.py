"""segment-analytics-python 2.4's own test files (from its installed wheel), run against
durable_analytics through the shim in ``conftest.py``. Skips and their reasons:
``skipped.py``; the deliberate differences: docs/api.md."""

# Files that test only segment's internals are imported as they are (every test in them is
# skipped; they are collected so that the count of what is skipped stays honest).
from segment.analytics.test import test_request, test_utils

from .conftest import pointed_at_durable_analytics

with pointed_at_durable_analytics():
    from segment.analytics.test import (
        test_client,
        test_consumer,
        test_init,
        test_module,
        test_oauth,
    )

TestClient = test_client.TestClient
TestInit = test_init.TestInit
TestModule = test_module.TestModule
TestConsumer = test_consumer.TestConsumer
TestOauthManager = test_oauth.TestOauthManager
TestOauthIntegration = test_oauth.TestOauthIntegration
TestRequests = test_request.TestRequests
TestNonObjectErrorBody = test_request.TestNonObjectErrorBody
TestUtils = test_utils.TestUtils


def test_every_test_of_segments_suite_is_collected_and_each_skip_is_listed() -> None:
    """The skip list names only tests that exist, and no file of the wheel is left out."""
    import importlib
    import inspect
    import pkgutil
    import sys
    import unittest

    package = sys.modules["segment.analytics.test"]  # the wheel's, imported by conftest

    from .skipped import RUN_ANYWAY, SKIPPED

    here = {name for name, value in globals().items() if inspect.isclass(value)}
    files = [m.name for m in pkgutil.iter_modules(package.__path__)]
    classes = set()
    for name in files:
        module = importlib.import_module(f"segment.analytics.test.{name}")
        classes |= {
            cls.__name__
            for cls in vars(module).values()
            if inspect.isclass(cls) and issubclass(cls, unittest.TestCase)
        }
    assert classes <= here
    for key in [*SKIPPED, *RUN_ANYWAY]:
        cls, test = key.split("::")
        assert cls in here and (test == "*" or hasattr(globals()[cls], test)), key
