"""Injected faults: scripted answers consumed one per request, then a default, each turned
into the outcome a failing server would give."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

from .contract import batch_of
from .wire import Outcome, Response


class Faults:
    """The fault script and the default answer. Not locked: the collector guards it."""

    def __init__(self) -> None:
        self.script: deque[Response] = deque()
        self.default: Optional[Response] = None

    def next(self) -> Optional[Response]:
        """The answer for the next batch request; None means "validate normally"."""
        return self.script.popleft() if self.script else self.default

    def clear(self) -> None:
        self.script.clear()
        self.default = None


def scripted_outcome(
    response: Response, payload: Optional[dict[str, Any]], stopping: threading.Event
) -> Outcome:
    """What a scripted answer does: wait, then answer its status (accepting the batch when
    it is a 2xx) or drop the connection."""
    if response.delay and stopping.wait(response.delay):
        return Outcome(0, drop=True)  # stopped or refused while "thinking"
    accepted = None
    if 200 <= response.status < 300 and not response.drop:
        batch = batch_of(payload)
        accepted = [m for m in batch if isinstance(m, dict)] if batch is not None else []
    headers = {"Retry-After": response.retry_after} if response.retry_after is not None else {}
    return Outcome(
        response.status, response.body, headers=headers, accepted=accepted, drop=response.drop
    )
