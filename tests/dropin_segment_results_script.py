"""A second program written for segment-analytics-python, run unchanged on both libraries:
what the calls return, what they raise, and what a full queue does.

    python tests/dropin_segment_results_script.py HOST [MODULE]

It prints one JSON object describing what it saw (never a messageId or a time, which differ
between runs), so that a test can require the same output from ``durable_analytics`` and from
``segment.analytics``.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, Callable, Dict


def caught(call: Callable[[], Any], kind: type) -> str:
    """Whether ``except kind:`` (what code written for segment says) catches the call's error."""
    try:
        call()
    except kind:
        return f"caught as {kind.__name__}"
    except Exception as exc:  # noqa: BLE001 - the point is to report it
        return f"not caught: {type(exc).__name__}"
    return "nothing raised"


def main(host: str, module: str = "durable_analytics") -> int:
    analytics: Any = importlib.import_module(module)
    Client = importlib.import_module(module + ".client").Client  # noqa: N806
    seen: Dict[str, Any] = {}

    analytics.write_key = "dropin-results-key"
    analytics.host = host
    analytics.on_error = False  # a falsy value segment ignores

    # Return values: (success, message) from every call, module-level and on a client.
    client = Client("dropin-results-key", host)
    calls = {
        "identify": client.identify("u1", {"plan": "pro"}),
        "track": client.track("u1", "Signed Up", {"n": 1}),
        "page": client.page("u1", "Docs", "Intro"),
        "screen": client.screen(anonymous_id="a1", name="Home"),
        "group": client.group("u1", "g1"),
        "alias": client.alias("a1", "u1"),
        "module track": analytics.track("u2", "Module Event"),
    }
    seen["returns"] = {
        name: {
            "success": success,
            "keys": sorted(message),
            "type": message["type"],
            "userId": message.get("userId"),
            "anonymousId": message.get("anonymousId"),
            "messageId is text": isinstance(message["messageId"], str),
        }
        for name, (success, message) in calls.items()
    }
    seen["float user id"] = client.track(1.5, "Float")[1]["userId"]
    client.flush()
    analytics.flush()

    # Exceptions: what code written for segment catches.
    seen["raises"] = {
        "no write key": caught(lambda: Client(), AssertionError),
        "no event": caught(lambda: client.track("u1"), AssertionError),
        "no user": caught(lambda: client.track(event="e"), AssertionError),
        "traits not a dict": caught(lambda: client.identify("u1", ["x"]), AssertionError),
        "too large": caught(lambda: client.track("u1", "Big", {"b": "x" * 40_000}), RuntimeError),
        "max_total_backoff_duration=None": caught(
            lambda: Client("k", host, max_total_backoff_duration=None), ValueError
        ),
    }

    # A full queue: the call that does not fit returns (False, message), it does not raise.
    small = Client("dropin-results-full", host, max_queue_size=1)
    small.join()
    first = small.track("u1", "First")
    second = small.track("u2", "Overflow")
    seen["full queue"] = {
        "first": first[0],
        "second": second[0],
        "second event": second[1]["event"],
    }
    print(json.dumps(seen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
