"""Token buckets in this process's memory: exact, O(1) per hit, bounded in size.

Correct only for one server process. With several workers or nodes each would hold its own buckets and the
limit would multiply by their number (litestar#4700); configure Redis for those (``redis.RedisLimiter``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .base import ALLOWED, EPSILON, Decision, full_after, take, wait_time

# How long a bucket is kept after it has refilled. A full bucket is equivalent to an absent one, but dropping it
# the moment it is full makes a key hit more often than its bucket refills (a high limit: a record GET's buckets
# under the benchmark's 1e9 a second, or 200 a second hit every 10 ms) lose and re-create its bucket on every hit.
KEEP_FULL_SECONDS = 0.5


class MemoryLimiter:
    """Buckets in an ordered dict, least recently hit first.

    Memory stays bounded two ways. Each hit looks at the two least recently hit buckets and drops those that have
    been full for KEEP_FULL_SECONDS (a full bucket is equivalent to an absent one, so that changes no decision).
    And when more than ``max_keys`` buckets are live anyway (a flood of distinct keys), the least recently hit
    ones are dropped even if not yet full: those keys get a fresh, full bucket, i.e. we fail open for them rather
    than grow.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, ts, drop_at (full, plus KEEP_FULL_SECONDS)]; a list so a hit updates in place without
        # allocating.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def hit(self, key: str, rate: float, burst: float, cost: float = 1) -> Decision:
        return self.hit_now(key, rate, burst, cost)

    def hit_now(self, key: str, rate: float, burst: float, cost: float = 1) -> Decision:
        """``hit`` without a coroutine: the whole step runs without yielding to the event loop, which is what
        makes it atomic."""
        now = self._clock()
        self._evict_full(now)
        return self._hit_at(now, key, rate, burst, cost)

    def _hit_at(self, now: float, key: str, rate: float, burst: float, cost: float) -> Decision:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            allowed, tokens, retry_after = take(burst, now, now, rate, burst, cost)
            if not allowed:  # cost > burst: nothing changed, nothing worth remembering
                return Decision(False, retry_after)
            buckets[key] = [tokens, now, now + full_after(tokens, rate, burst) + KEEP_FULL_SECONDS]
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
            return ALLOWED
        buckets.move_to_end(key)
        allowed, tokens, retry_after = take(bucket[0], bucket[1], now, rate, burst, cost)
        if not allowed:
            # The stored state still yields the same refill later, so a denied hit need not write anything.
            return Decision(False, retry_after)
        bucket[0] = tokens
        bucket[1] = now
        bucket[2] = now + full_after(tokens, rate, burst) + KEEP_FULL_SECONDS
        return ALLOWED

    async def hit_chain(self, hits: Sequence[tuple[str, float, float]]) -> Decision:
        return self.hit_chain_now(hits)

    def hit_chain_now(self, hits: Sequence[tuple[str, float, float]]) -> Decision:
        """``hit_chain`` without a coroutine (``RateLimitPolicy.check_now``): hits that never yield, so the chain
        is atomic like a single hit, and at one instant: the clock is read once. Each hit as ``hit_now``; with a
        positive rate (every configured limit) with ``_evict_full``, ``take`` and ``full_after`` written out (each
        call costs as much as its arithmetic: this runs on every request). Float constants throughout: comparing
        a float with an int takes a slower path in C."""
        buckets = self._buckets
        now = self._clock()
        for key, rate, burst in hits:
            bucket = None
            for oldest in buckets:  # _evict_full, written out (the least recently hit bucket; a loop's first
                # step is cheaper than next(iter(...))), and the bucket hit, which most often is that one
                bucket = buckets[oldest]
                if bucket[2] <= now:
                    del buckets[oldest]
                    for oldest in buckets:
                        if buckets[oldest][2] <= now:
                            del buckets[oldest]
                        break
                    bucket = buckets.get(key)
                elif oldest is not key:
                    bucket = buckets.get(key)
                break
            if rate <= 0.0 or burst + EPSILON < 1.0:
                decision = self._hit_at(now, key, rate, burst, 1)
                if not decision.allowed:
                    return decision
                continue
            if bucket is None:  # a fresh (full) bucket gives one: _hit_at's first case
                tokens = burst - 1.0  # full_after: (burst - tokens) / rate, 0.0 where burst - 1.0 == burst
                buckets[key] = [tokens, now, now + (burst - tokens) / rate + KEEP_FULL_SECONDS]
                if len(buckets) > self._max_keys:
                    buckets.popitem(last=False)
                continue
            buckets.move_to_end(key)
            tokens = bucket[0]
            if now > bucket[1]:  # take(tokens, bucket[1], now, rate, burst, 1)
                tokens += (now - bucket[1]) * rate
                if tokens > burst:
                    tokens = burst
            if tokens + EPSILON < 1.0:
                return Decision(False, wait_time(1.0 - tokens, rate, burst, 1))
            tokens -= 1.0
            bucket[0] = tokens
            bucket[1] = now
            # full_after (rate > 0; a bucket last hit with a larger burst and not refilled since may hold more)
            bucket[2] = now + ((burst - tokens) / rate if tokens < burst else 0.0) + KEEP_FULL_SECONDS
        return ALLOWED

    def _evict_full(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(2):  # two per hit outpaces the at most one bucket a hit can add
            if not buckets:
                return
            key = next(iter(buckets))
            if buckets[key][2] > now:
                return
            del buckets[key]

    async def aclose(self) -> None:
        self._buckets.clear()
