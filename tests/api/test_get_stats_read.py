"""``StatsBuffer.add_read`` (a record GET's count, SQLite's ``count_access(reads=1)``) leaves the same pending
deltas as ``add(..., reads=1)``: in any mix with other counts and clocks that go back."""

from __future__ import annotations

import random

from openkvs.storage.stats import StatsBuffer


def test_add_read_counts_as_add_of_one_read() -> None:
    rng = random.Random(3)
    fast, plain = StatsBuffer(), StatsBuffer()
    for _ in range(3000):
        store = rng.choice(["a", "b", "c"])
        now = rng.randrange(1_000, 1_100)  # a clock that may go back: the latest access is kept
        if rng.random() < 0.7:
            fast.add_read(store, now)
            plain.add(store, now, reads=1)
        else:
            counts = {k: rng.randrange(3) for k in ("reads", "writes", "deletes", "lists")}
            fast.add(store, now, **counts)
            plain.add(store, now, **counts)
        if rng.random() < 0.01:
            assert fast.drain() == plain.drain()
    assert fast.drain() == plain.drain()
