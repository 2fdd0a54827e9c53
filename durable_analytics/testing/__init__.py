"""A Segment-compatible loopback collector for tests, demos and the ``collect`` command.

It speaks the wire contract (``POST /v1/batch``, Basic auth, gzip, size limits) over real HTTP
on 127.0.0.1, records everything it receives, and can be scripted to fail in the ways a real
server fails (status codes, ``Retry-After``, slow answers, resets, outages), so that a client's
retry, split and dedupe logic can be tested end to end without a network.

It uses the standard library only, so that it can ship inside the package and run anywhere.
The pieces: :mod:`.collector` (the :class:`Collector`), :mod:`.contract` (what the server
checks), :mod:`.faults` (what it is told to get wrong), :mod:`.network` (a far or flaky
network in front of it), :mod:`.server` (HTTP plumbing) and
:mod:`.wire` (the records and answers).
"""

from __future__ import annotations

from .collector import BATCH_PATH, Collector
from .network import Network
from .wire import ReceivedRequest, Response

__all__ = ["BATCH_PATH", "Collector", "Network", "ReceivedRequest", "Response"]
