"""``RateLimitPolicy.check_user_now`` (a signed-in caller's requests, api/common.py ``rate_limit_now``) decides as
``check_now`` of the identity ``user:<id>``: the same verdicts and the same buckets, request after request, for
users, stores, record operations and named budgets, at limits that refuse (fake clock, no sleeping)."""

from __future__ import annotations

import random

import pytest

from openkvs.ratelimit import MemoryLimiter
from openkvs.ratelimit.policy import RateLimitPolicy


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _policy(clock: _Clock) -> RateLimitPolicy:
    return RateLimitPolicy(MemoryLimiter(clock, max_keys=7), per_user_per_minute=240, per_store_per_second=3,
                           per_store_records_per_second=5, budgets={"queue-batch": 2})


@pytest.mark.parametrize("seed", range(5))
def test_check_user_now_decides_as_check_now_of_the_users_identity(seed: int) -> None:
    rng = random.Random(seed)
    clock = _Clock()
    by_id, by_identity = _policy(clock), _policy(clock)
    refused = 0
    for _ in range(2000):
        user = rng.choice(["u1", "u2", "u3"])
        store = rng.choice([None, "s1", "s2", "s3"])
        record_op = rng.random() < 0.5
        budget = "queue-batch" if store is not None and rng.random() < 0.2 else None
        clock.now += rng.choice([0.0, 0.0, 0.001, 0.01, 0.3, 1.5])
        got = by_id.check_user_now(user, store, record_op, budget)
        expected = by_identity.check_now("user:" + user, store, record_op, budget)
        assert got == expected
        assert list(by_id.limiter._buckets.items()) == list(by_identity.limiter._buckets.items())  # type: ignore[attr-defined]
        refused += expected is not None and not expected.allowed
    assert refused > 50  # the limits were reached, not only passed
