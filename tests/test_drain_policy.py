"""When a drain stops: the decision as a pure function, as a table."""

from __future__ import annotations

from typing import Optional

import pytest

from durable_analytics.cli.drain import stop_reason


@pytest.mark.parametrize(
    "pending, interrupted, settled, max_messages, remaining, reason",
    [
        (True, False, 0, None, 10.0, None),  # work left, time left: go on
        (False, False, 0, None, 10.0, "emptied"),
        (False, True, 5, 5, -1.0, "emptied"),  # done wins over every other reason
        (True, True, 0, None, 10.0, "interrupted"),
        (True, True, 5, 5, -1.0, "interrupted"),
        (True, False, 5, 5, 10.0, "max-messages"),
        (True, False, 4, 5, 10.0, None),
        (True, False, 9, 5, -1.0, "max-messages"),
        (True, False, 0, None, 0.0, "timeout"),
        (True, False, 0, None, -0.5, "timeout"),
        (True, False, 0, None, 0.001, None),
    ],
)
def test_stop_reason_table(
    pending: bool,
    interrupted: bool,
    settled: int,
    max_messages: Optional[int],
    remaining: float,
    reason: Optional[str],
) -> None:
    assert stop_reason(pending, interrupted, settled, max_messages, remaining) == reason
