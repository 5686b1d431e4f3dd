"""MemoryLimiter keeps a bucket that keeps being hit, however high its limit: a full bucket is dropped only once it
has been full for KEEP_FULL_SECONDS, so a key hit more often than its bucket refills is not dropped and made again
on every hit (what a record GET's two buckets did under limits of 1e9 a second). Fake clock, no sleeping."""

from __future__ import annotations

from openkvs.ratelimit import MemoryLimiter
from openkvs.ratelimit.memory import KEEP_FULL_SECONDS
from openkvs.ratelimit.policy import RateLimitPolicy

from .helpers import FakeClock

HIGH = 1e9


def test_a_record_gets_buckets_stay_under_a_very_high_limit() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    policy = RateLimitPolicy(limiter, int(HIGH * 60), int(HIGH), int(HIGH))
    verdict = policy.check_now("ip:127.0.0.1", "store1", True)
    assert verdict is not None and verdict.allowed
    assert len(limiter) == 2  # the caller's bucket and the store's record bucket
    kept = dict(limiter._buckets)
    for _ in range(100):
        clock.now += 0.001  # a request a millisecond: each bucket refilled long before the next
        verdict = policy.check_now("ip:127.0.0.1", "store1", True)
        assert verdict is not None and verdict.allowed
        assert len(limiter) == 2
    assert all(limiter._buckets[k] is kept[k] for k in kept), "the same buckets, updated in place"


def test_single_hits_keep_their_bucket_too() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    for i in range(100):
        assert limiter.hit_now("a" if i % 2 else "b", 200, 200).allowed  # Apify's record limit, hit every 10 ms
        clock.now += 0.01
        assert len(limiter) == (1 if i == 0 else 2)


def test_a_bucket_full_for_the_keep_time_is_dropped() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    assert limiter.hit_now("idle", 10, 10).allowed
    clock.now += 0.1 + KEEP_FULL_SECONDS - 0.001  # full after 0.1 s; kept a moment less than the keep time
    assert limiter.hit_now("hot", 10, 10).allowed
    assert len(limiter) == 2
    clock.now += 0.002
    assert limiter.hit_now("hot", 10, 10).allowed
    assert len(limiter) == 1  # "idle" went
