"""Poison: messages the server rejects with 400 are dead-lettered with the reason; every other
message arrives, and the queue never stalls behind them."""

from __future__ import annotations

import json
import math
import random
from typing import Any, List, Set

from reliability_helpers import suite_seed

from durable_analytics.testing import Collector

MARKER = "POISON-PILL"
MAX_BATCH = 16


def _record(client: Any, rng: random.Random, count: int, prefix: str) -> tuple:
    good: List[str] = []
    poison: Set[str] = set()
    for n in range(count):
        bad = rng.random() < 0.1
        properties = {"n": n, "payload": MARKER if bad else "fine"}
        message_id = client.track(
            f"user-{n % 7}", "Poison Test", properties, message_id=f"{prefix}-{n}"
        ).message_id
        (poison.add if bad else good.append)(message_id)
    return good, poison


def test_poison_is_dead_lettered_and_the_rest_flows(make_client, collector: Collector) -> None:
    seed = suite_seed()
    rng = random.Random(seed)
    collector.reject_marker = MARKER
    client = make_client(flush_at=8, max_batch_messages=MAX_BATCH)

    good, poison = _record(client, rng, 120, "first")
    assert poison, f"seed={seed}: no poison drawn"
    assert client.flush(), f"seed={seed}: the queue stalled behind poison"
    assert collector.message_ids == set(good)

    # Recorded after the poison: still delivered, the queue did not stall.
    more_good, more_poison = _record(client, rng, 40, "second")
    assert client.flush(), f"seed={seed}: the queue stalled after poison"
    assert collector.message_ids == set(good) | set(more_good)
    assert collector.duplicates == 0

    all_poison = poison | more_poison
    letters = client.store.dead_letters(limit=1000)
    assert {json.loads(letter.data)["messageId"] for letter in letters} == all_poison
    for letter in letters:
        assert letter.http_status == 400
        assert "HTTP 400" in letter.reason and "reject_marker" in letter.reason
    stats = client.stats()
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, len(all_poison))

    # Splitting is a bisection: each poison message is in at most one rejected request per
    # level of halving, never resent in a loop.
    rejected = [r for r in collector.requests if r.status == 400]
    depth = math.ceil(math.log2(MAX_BATCH)) + 1
    assert len(all_poison) <= len(rejected) <= len(all_poison) * depth
    for request in collector.requests:
        if request.status == 200:
            assert MARKER not in json.dumps(request.payload)


def test_server_size_limit_below_the_clients_dead_letters_only_the_big_one(
    make_client, collector: Collector
) -> None:
    """The server's per-message limit is stricter than the client's: a 400 for one message."""
    collector.max_message_bytes = 2_000
    client = make_client(flush_at=5, max_batch_messages=5)
    small = [client.track("u", "Small", {"n": n}).message_id for n in range(4)]
    big = client.track("u", "Big", {"blob": "x" * 5_000}).message_id
    small += [client.track("u", "Small", {"n": n}).message_id for n in range(4, 9)]
    assert client.flush()
    assert collector.message_ids == set(small)
    (letter,) = client.store.dead_letters()
    assert json.loads(letter.data)["messageId"] == big
    assert letter.http_status == 400 and "larger than 2000 bytes" in letter.reason
