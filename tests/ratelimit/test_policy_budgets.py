"""RateLimitPolicy's named per-store budgets (request queues' own, API-request-queues.md section 10): each is a
bucket of its own per store, apart from the store and record buckets and from the same budget of other stores."""

from __future__ import annotations

import pytest

from openkvs.ratelimit import MemoryLimiter, RateLimitPolicy

from .helpers import FakeClock

pytestmark = pytest.mark.anyio


async def in_a_row(p: RateLimitPolicy, store_id: str, budget: str | None, record_op: bool = False) -> int:
    n = 0
    while (await p.check("user:u", store_id, record_op, budget)).allowed:
        n += 1
    return n


async def test_named_budgets_are_separate_buckets() -> None:
    clock = FakeClock()
    p = RateLimitPolicy(MemoryLimiter(clock), per_store_per_second=6, per_store_records_per_second=8,
                        budgets={"queue-requests": 5, "queue-batch": 3})
    assert (await p.check("user:u", "q", False, "queue-batch")).limit == 3
    assert p.limit_for("q", False, "queue-requests") == 5
    assert p.limit_for(None, False, "queue-requests") == p.user_limit  # no store: the caller's limit
    assert await in_a_row(p, "q", "queue-batch") == 2  # one was spent above
    assert await in_a_row(p, "q", "queue-requests") == 5
    assert await in_a_row(p, "q", None) == 6
    assert await in_a_row(p, "q", None, record_op=True) == 8
    assert await in_a_row(p, "other", "queue-batch") == 3
    clock.advance(1.0)
    assert await in_a_row(p, "q", "queue-batch") == 3


def test_a_budget_below_one_a_second_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimitPolicy(MemoryLimiter(), budgets={"queue-batch": 0})
