"""A program written for segment-analytics-python, run unchanged on durable-analytics.

Only segment's names and call signatures are used: module settings, positional and keyword
calls of all six methods, ``flush``, ``join`` and ``shutdown``. It prints the messageIds of
its calls as one JSON list, so a test can check that every one of them arrived.

    python tests/dropin_segment_script.py HOST [MODULE]

MODULE defaults to ``durable_analytics``; ``segment.analytics`` runs the same program on
segment-analytics-python itself, which shows that the program really is written for it.
"""

from __future__ import annotations

import datetime
import importlib
import json
import sys
from typing import Any, List


def main(host: str, module: str = "durable_analytics") -> int:
    analytics: Any = importlib.import_module(module)
    errors: List[Any] = []

    analytics.write_key = "dropin-write-key"
    analytics.host = host
    analytics.debug = False
    analytics.send = True
    analytics.sync_mode = False
    analytics.max_retries = 3
    analytics.timeout = 10
    analytics.on_error = lambda error, batch: errors.append(error)

    when = datetime.datetime(2024, 3, 1, 9, 30, tzinfo=datetime.timezone.utc)
    context = {"ip": "203.0.113.9", "integrations": {"All": False, "Vero": True}}
    integrations = {"Google Analytics": False}
    results = [
        # Positional, in segment's order.
        analytics.identify(
            "user-1", {"email": "ann@example.com"}, context, when, "anon-1", integrations
        ),
        analytics.track("user-1", "Order Completed", {"revenue": 42.5}, context, when, "anon-1"),
        analytics.page("user-1", "Docs", "Quickstart", {"path": "/docs"}, context, when),
        analytics.screen("user-1", "Home", "Feed", {"tab": 1}, context, when),
        analytics.group("user-1", "group-1", {"plan": "team"}, context, when),
        analytics.alias("anon-1", "user-1", context, when, integrations),
        # Keyword calls, ids as ints, no user_id where anonymous_id will do.
        analytics.identify(user_id=7, traits={"name": "Bo"}),
        analytics.track(anonymous_id="anon-2", event="Clicked", properties={"button": "buy"}),
        analytics.page(user_id=7, name="Pricing", category="Marketing"),
        analytics.screen(anonymous_id="anon-2", name="Settings"),
        analytics.group(user_id=7, group_id=99, traits={"seats": 3}),
        analytics.alias(previous_id="anon-2", user_id=7, message_id="dropin-alias-fixed-id"),
    ]
    analytics.flush()
    analytics.join()
    analytics.shutdown()

    ids = [message["messageId"] for _success, message in results]  # segment's (success, msg)
    print(json.dumps(ids))
    if errors:
        print(f"on_error was called: {errors!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
