"""Injected faults: scripted answers consumed one per request, then a default, each turned
into the outcome a failing server would give."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

from .contract import batch_of
from .wire import Outcome, Response


class Faults:
    """The fault script, the default answer, and what was injected so far. Not locked: the
    collector guards it."""

    def __init__(self) -> None:
        self.script: deque[Response] = deque()
        self.default: Optional[Response] = None
        self.injected: dict[str, int] = {}

    def next(self) -> Optional[Response]:
        """The answer for the next batch request; None means "validate normally"."""
        response = self.script.popleft() if self.script else self.default
        if response is not None:
            name = label(response)
            self.injected[name] = self.injected.get(name, 0) + 1
        return response

    def clear(self) -> None:
        self.script.clear()
        self.default = None
        self.injected.clear()

    def describe(self) -> dict[str, Any]:
        """What is scripted and what was injected, in words, for the debugger page."""
        return {
            "pending": [label(r) for r in self.script],
            "default": None if self.default is None else label(self.default),
            "injected": dict(self.injected),
        }


def label(response: Response) -> str:
    """A scripted answer in a few words: ``503 Retry-After: 30``, ``reset after 0.5s``."""
    text = "connection reset" if response.drop else str(response.status)
    if response.retry_after is not None and not response.drop:
        text += f" Retry-After: {response.retry_after}"
    if response.delay:
        text += f" after {response.delay:g}s"
    return text


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
    headers = dict(response.headers or {})
    if response.retry_after is not None:
        headers["Retry-After"] = response.retry_after
    return Outcome(
        response.status, response.body, headers=headers, accepted=accepted, drop=response.drop
    )
