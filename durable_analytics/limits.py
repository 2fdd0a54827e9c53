"""Size limits of the wire contract and the defaults derived from them, each written once."""

from __future__ import annotations

# The largest message (its JSON, in bytes) the Segment API accepts, and our default limit.
DEFAULT_MAX_MESSAGE_BYTES = 32_000
# The largest request body the Segment API accepts: a batch, with its envelope.
MAX_REQUEST_BYTES = 500_000
# The most events Segment accepts in one batch (it answers 200 and silently drops the rest).
MAX_BATCH_MESSAGES = 2_500
# How much the queue file may hold by default before the overflow policy applies.
DEFAULT_MAX_QUEUE_BYTES = 1_000_000_000
