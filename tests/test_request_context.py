"""The request context merge as a table (a pure function), and its binding rules."""

from __future__ import annotations

import threading
from typing import Any, Dict

import pytest

from durable_analytics import Alias, Identify, Track
from durable_analytics.request_context import (
    RequestContext,
    apply,
    bound,
    current,
    merge,
    set_user_id,
)

FULL = dict(
    ip="10.0.0.1",
    user_agent="UA/1",
    url="https://shop.test/cart?x=1",
    path="/cart",
    referrer="https://ref.test/",
    search="?x=1",
)
FRAGMENT = {
    "ip": "10.0.0.1",
    "userAgent": "UA/1",
    "page": {
        "url": "https://shop.test/cart?x=1",
        "path": "/cart",
        "referrer": "https://ref.test/",
        "search": "?x=1",
    },
}

CASES = [
    # (request context, call's user_id, call's context) -> (user_id, context)
    ({}, None, None, None, None),
    (FULL, None, None, None, FRAGMENT),
    (dict(FULL, user_id="u-7"), None, None, "u-7", FRAGMENT),
    (dict(FULL, user_id="u-7"), "given", None, "given", FRAGMENT),
    ({"ip": "10.0.0.1"}, None, {"ip": "1.2.3.4"}, None, {"ip": "1.2.3.4"}),
    (
        {"path": "/cart", "url": "https://s/cart"},
        None,
        {"page": {"path": "/x"}, "locale": "de"},
        None,
        {"page": {"path": "/x", "url": "https://s/cart"}, "locale": "de"},
    ),
    ({"path": "/a"}, None, {"page": "not a dict"}, None, {"page": "not a dict"}),
    ({"extra": {"celery": {"task": "t"}}}, None, None, None, {"celery": {"task": "t"}}),
    ({"user_id": lambda: 42}, None, None, 42, None),
    ({"user_id": lambda: None}, None, None, None, None),
]


@pytest.mark.parametrize("request_fields, user_id, context, want_user, want_context", CASES)
def test_merge_table(
    request_fields: Dict[str, Any], user_id: Any, context: Any, want_user: Any, want_context: Any
) -> None:
    message = Track(user_id=user_id, anonymous_id="a", event="E", context=context)
    merged = merge(RequestContext(**request_fields), message)
    assert merged.user_id == want_user
    assert merged.context == want_context
    assert message.context == context  # the caller's objects are never changed


def test_alias_user_id_is_never_filled_in() -> None:
    message = Alias(previous_id="old", user_id=None)
    assert merge(RequestContext(user_id="u-1"), message).user_id is None


def test_a_context_that_is_not_a_mapping_is_left_for_the_encoder() -> None:
    message = Identify(user_id="u", context=["bad"])  # type: ignore[arg-type]
    assert merge(RequestContext(ip="1.1.1.1"), message).context == ["bad"]


def test_the_user_resolver_runs_once_and_only_when_needed() -> None:
    calls = []
    context = RequestContext(user_id=lambda: calls.append(1) or "u")
    merge(context, Track(user_id="explicit", event="E"))
    assert calls == []
    merge(context, Track(anonymous_id="a", event="E"))
    merge(context, Track(anonymous_id="a", event="E"))
    assert calls == [1]


def test_a_failing_resolver_means_no_user(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise RuntimeError("session store down")

    merged = merge(RequestContext(user_id=broken), Track(anonymous_id="a", event="E"))
    assert merged.user_id is None
    assert "resolver failed" in caplog.text


def test_binding_is_per_thread_and_restored() -> None:
    seen = {}
    outer = RequestContext(path="/outer")
    with bound(outer):
        with bound(RequestContext(path="/inner")):
            assert current().path == "/inner"
        assert current() is outer
        thread = threading.Thread(target=lambda: seen.update(other=current()))
        thread.start()
        thread.join()
    assert seen["other"] is None
    assert current() is None
    message = Track(anonymous_id="a", event="E")
    assert apply(message) is message


def test_set_user_id_reaches_the_bound_request_only() -> None:
    assert set_user_id("u-1") is False
    with bound(RequestContext()) as context:
        assert set_user_id("u-2") is True
        assert context.user_id == "u-2"


def test_no_framework_is_imported_unless_its_integration_is() -> None:
    import subprocess
    import sys

    code = (
        "import sys, durable_analytics, durable_analytics.aio, durable_analytics.integrations\n"
        "import durable_analytics.request_context\n"
        "durable_analytics.Client('k', send=False).track('u', 'E')\n"
        "frameworks = ('django', 'flask', 'starlette', 'fastapi', 'celery', 'asgiref')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in frameworks))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
