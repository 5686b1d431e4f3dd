"""RateLimitPolicy: which buckets a request spends from, and what goes in the headers."""

from __future__ import annotations

import pytest

from openkvs.ratelimit import MemoryLimiter, RateLimitPolicy, Verdict

from .helpers import FakeClock

pytestmark = pytest.mark.anyio


def policy(clock: FakeClock, **kwargs: int) -> RateLimitPolicy:
    return RateLimitPolicy(MemoryLimiter(clock), **kwargs)


async def allowed_in_a_row(p: RateLimitPolicy, identity: str, store_id: str | None, record_op: bool) -> int:
    n = 0
    while (await p.check(identity, store_id, record_op)).allowed:
        n += 1
    return n


async def test_limit_header_values() -> None:
    p = policy(FakeClock())
    assert (await p.check("user:u", None, False)) == Verdict(True, 0, 4166)  # 250000 / 60, rounded down
    assert (await p.check("user:u", None, True)).limit == 4166  # a record op needs a store
    assert (await p.check("user:u", "s", False)).limit == 60
    assert (await p.check("user:u", "s", True)).limit == 200


async def test_record_ops_and_other_store_ops_use_separate_buckets() -> None:
    clock = FakeClock()
    p = policy(clock)
    assert await allowed_in_a_row(p, "user:u", "s", True) == 200
    # The record bucket is empty, yet other operations on the store have their whole 60.
    assert await allowed_in_a_row(p, "user:u", "s", False) == 60
    denied = await p.check("user:u", "s", False)
    assert denied == Verdict(False, 1, 60)
    assert denied.retry_after == 1  # the alias the HTTP layer uses
    # Other stores are untouched.
    assert (await p.check("user:u", "other", True)).allowed


async def test_stores_are_shared_between_callers() -> None:
    p = policy(FakeClock())
    assert await allowed_in_a_row(p, "user:a", "s", False) == 60
    assert not (await p.check("user:b", "s", False)).allowed
    assert not (await p.check("ip:192.0.2.1", "s", False)).allowed


async def test_user_buckets_are_independent() -> None:
    p = policy(FakeClock(), per_user_per_minute=600)  # 10 a second
    assert await allowed_in_a_row(p, "user:a", None, False) == 10
    assert (await p.check("user:b", None, False)).allowed
    assert (await p.check("ip:192.0.2.1", None, False)).allowed


async def test_default_user_burst_is_one_seconds_worth() -> None:
    assert await allowed_in_a_row(policy(FakeClock()), "user:u", None, False) == 4166


async def test_a_paced_client_gets_the_whole_minute() -> None:
    clock = FakeClock()
    p = policy(clock, per_user_per_minute=600)
    allowed = 0
    for _ in range(60 * 20):  # 20 requests a second for a minute: twice the rate
        allowed += (await p.check("user:u", None, False)).allowed
        clock.advance(0.05)
    assert 600 <= allowed <= 600 + 10  # the minute's budget, plus at most the one second's burst


async def test_denied_by_user_spends_nothing_from_the_store() -> None:
    p = policy(FakeClock(), per_user_per_minute=60)  # one request a second
    assert (await p.check("user:u", "s", False)).allowed
    for _ in range(100):
        assert not (await p.check("user:u", "s", False)).allowed
    # The store still has 59 of its 60: each new caller gets one through until they run out.
    callers = [(await p.check(f"user:o{i}", "s", False)).allowed for i in range(100)]
    assert callers == [True] * 59 + [False] * 41



async def test_retry_after_waiting_is_allowed_again() -> None:
    clock = FakeClock()
    p = policy(clock, per_store_per_second=1)
    assert (await p.check("user:u", "s", False)).allowed
    verdict = await p.check("user:u", "s", False)
    assert verdict == Verdict(False, 1, 1)
    clock.advance(verdict.retry_after_seconds)
    assert (await p.check("user:u", "s", False)).allowed


def test_rejects_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError):
        RateLimitPolicy(MemoryLimiter(), per_user_per_minute=30)  # half a request a second: bucket < 1
    with pytest.raises(ValueError):
        RateLimitPolicy(MemoryLimiter(), per_store_per_second=0)
    RateLimitPolicy(MemoryLimiter(), per_user_per_minute=30, user_burst_seconds=2)  # a bigger bucket is fine


async def test_make_limiter_picks_the_backend() -> None:
    from openkvs.ratelimit import RedisLimiter, make_limiter

    assert isinstance(make_limiter(None), MemoryLimiter)
    assert isinstance(make_limiter(""), MemoryLimiter)
    limiter = make_limiter("redis://127.0.0.1:6379/0")  # connects lazily: no Redis needed here
    assert isinstance(limiter, RedisLimiter)
    await limiter.aclose()
