"""MemoryLimiter.hit_chain_now (every request's rate limit, written out for speed) decides as the chain of
single hits it stands for: the same decisions and the same buckets, hit after hit, driven by a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.ratelimit import MemoryLimiter
from tests.conftest import examples

from .helpers import FakeClock

KEYS = st.sampled_from(["who:a", "who:b", "records:s", "store:s"])
RATES = st.sampled_from([0.0, 0.5, 1.0, 3.0, 200.0, 4166.67, 1e9])
BURSTS = st.sampled_from([0.5, 1.0, 2.0, 3.0, 200.0, 4166.67, 1e9])
HIT = st.tuples(KEYS, RATES, BURSTS)
STEP = st.tuples(st.sampled_from([0.0, 0.0, 0.001, 0.3, 1.0, 5.0, -0.5]), st.lists(HIT, min_size=1, max_size=3))


def chain_of_single_hits(limiter: MemoryLimiter, hits: list[tuple[str, float, float]]) -> object:
    for key, rate, burst in hits:
        decision = limiter.hit_now(key, rate, burst)
        if not decision.allowed:
            return decision
    return limiter.hit_chain_now([])  # ALLOWED


@settings(max_examples=examples(300), deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=40), max_keys=st.sampled_from([1, 2, 100]))
def test_chain_now_is_the_chain_of_single_hits(steps: list, max_keys: int) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    written_out = MemoryLimiter(clock_a, max_keys=max_keys)
    one_by_one = MemoryLimiter(clock_b, max_keys=max_keys)
    for advance, hits in steps:
        clock_a.advance(advance)
        clock_b.advance(advance)
        assert written_out.hit_chain_now(hits) == chain_of_single_hits(one_by_one, hits)
        assert written_out._buckets == one_by_one._buckets
        assert list(written_out._buckets) == list(one_by_one._buckets)  # the same order: eviction follows it


def test_a_flood_is_still_refused() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    hits = [("who:a", 1000.0, 1000.0), ("records:s", 3.0, 3.0)]
    decisions = [limiter.hit_chain_now(hits) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert 0 < decisions[3].retry_after <= 1 / 3 + 1e-5
    clock.advance(1 / 3 + 1e-5)
    assert limiter.hit_chain_now(hits).allowed
