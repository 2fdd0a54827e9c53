"""A network in front of the collector: every batch request is held for a round trip, and a
share of them fails at random, as a far or flaky server would. Seeded, so that a run can be
repeated: the n-th request to arrive gets the n-th draw."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Optional

from .wire import Outcome


@dataclass(frozen=True)
class Network:
    """``delay``: seconds every batch request is held before it is answered (a round trip);
    ``fault_rate``: the share of requests answered ``fault_status`` instead, at random, with
    nothing accepted; ``seed``: the random sequence (None: a different one each run)."""

    delay: float = 0.0
    fault_rate: float = 0.0
    fault_status: int = 500
    seed: Optional[int] = 0

    def __post_init__(self) -> None:
        if not isinstance(self.delay, (int, float)) or not self.delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, not {self.delay!r}")
        if not isinstance(self.fault_rate, (int, float)) or not 0 <= self.fault_rate <= 1:
            raise ValueError(f"fault_rate must be between 0 and 1, not {self.fault_rate!r}")
        if not 500 <= self.fault_status <= 599 and self.fault_status not in (408, 429):
            raise ValueError(
                f"fault_status must be a transient status (408, 429 or 5xx), "
                f"not {self.fault_status!r}"
            )


class NetworkState:
    """The network in use and its random sequence (drawn under its own lock)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._random = random.Random(network.seed)
        self._lock = threading.Lock()
        self.faults = 0
        self.holding = 0  # requests being held right now
        self.peak = 0  # the most held at once: how many a client kept in flight

    def describe(self) -> str:
        """The network in words, for the debugger page."""
        network = self.network
        parts = []
        if network.delay:
            parts.append(f"every request held {network.delay:g}s")
        if network.fault_rate:
            parts.append(
                f"{network.fault_rate:.0%} answered {network.fault_status} at random "
                f"({self.faults:,} so far)"
            )
        return ", ".join(parts)

    def pass_through(self, stopping: threading.Event) -> Optional[Outcome]:
        """Hold the request for the round trip; return the fault to answer, or None to serve
        it normally. A collector stopping meanwhile drops the connection."""
        network = self.network
        with self._lock:  # drawn on arrival: the n-th request gets the n-th draw
            faulted = bool(network.fault_rate) and self._random.random() < network.fault_rate
            self.faults += faulted
            self.holding += 1
            self.peak = max(self.peak, self.holding)
        try:
            if network.delay and stopping.wait(network.delay):
                return Outcome(0, drop=True)
        finally:
            with self._lock:
                self.holding -= 1
        if faulted:
            return Outcome(network.fault_status, {"error": "injected by the collector's network"})
        return None
