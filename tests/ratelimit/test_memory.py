"""MemoryLimiter and the shared bucket arithmetic, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openkvs.ratelimit import Decision, MemoryLimiter
from openkvs.ratelimit.base import take
from tests.conftest import examples

from .helpers import FakeClock


def run(coro: Coroutine[Any, Any, Decision]) -> Decision:
    """Drive a hit to completion without an event loop; fails if it ever suspends (it must not: that is what
    makes MemoryLimiter atomic, and it keeps hypothesis fast)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("MemoryLimiter.hit awaited something")


rates = st.floats(min_value=0.01, max_value=1000)
bursts = st.floats(min_value=1, max_value=500)
steps = st.lists(
    st.tuples(st.floats(min_value=0, max_value=5), st.sampled_from([1, 1, 1, 0.5, 2, 3.5])), min_size=1, max_size=60
)


@settings(max_examples=examples(300), deadline=None)
@given(rate=rates, burst=bursts, steps=steps)
def test_never_more_than_burst_plus_refill_in_any_window(rate: float, burst: float, steps: list) -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    times, spent = [], []
    for dt, cost in steps:
        clock.advance(dt)
        allowed = run(limiter.hit("k", rate, burst, cost)).allowed
        times.append(clock.now)
        spent.append(cost if allowed else 0)
    for i in range(len(times)):
        total = 0.0
        for j in range(i, len(times)):
            total += spent[j]
            assert total <= burst + rate * (times[j] - times[i]) + 1e-6 * (j - i + 1)


@settings(max_examples=examples(300), deadline=None)
@given(rate=rates, burst=bursts, steps=steps, cost=st.sampled_from([1, 0.5, 2]))
def test_retry_after_is_enough_and_not_much_more(rate: float, burst: float, steps: list, cost: float) -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    for dt, c in steps:
        clock.advance(dt)
        run(limiter.hit("k", rate, burst, c))
    decision = run(limiter.hit("k", rate, burst, cost))
    if decision.allowed:
        assert decision.retry_after == 0
        return
    if cost > burst:
        assert decision.retry_after == math.inf
        return
    assert 0 < decision.retry_after < math.inf
    # Tight: a little earlier is still too early (when "a little" is worth more than the float slack).
    if decision.retry_after > 2e-5 and rate * 9e-6 > 1e-8:
        probe = MemoryLimiter(clock)  # a copy of the state, so the real limiter is left as it was
        probe._buckets = OrderedDict((k, list(v)) for k, v in limiter._buckets.items())
        saved = clock.now
        clock.advance(decision.retry_after - 1e-5)
        assert not run(probe.hit("k", rate, burst, cost)).allowed
        clock.now = saved
    clock.advance(decision.retry_after)
    assert run(limiter.hit("k", rate, burst, cost)).allowed


keys = st.sampled_from(["a", "b", "c", "d", "e"])


@settings(max_examples=examples(300), deadline=None)
@given(
    rate=rates,
    burst=bursts,
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=3), keys), min_size=1, max_size=80),
)
def test_evicting_full_buckets_changes_no_decision(rate: float, burst: float, steps: list) -> None:
    """Against a reference that never forgets anything."""
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    reference: dict[str, tuple[float, float]] = {}
    for dt, key in steps:
        clock.advance(dt)
        tokens, ts = reference.get(key, (burst, clock.now))
        expected, tokens, retry = take(tokens, ts, clock.now, rate, burst, 1)
        if expected:
            reference[key] = (tokens, clock.now)
        got = run(limiter.hit(key, rate, burst))
        assert got.allowed == expected
        assert got.retry_after == pytest.approx(retry)


@settings(max_examples=examples(100), deadline=None)
@given(max_keys=st.integers(1, 20), steps=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 100)), max_size=200))
def test_memory_is_bounded(max_keys: int, steps: list) -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock, max_keys=max_keys)
    for dt, key in steps:
        clock.advance(dt)
        run(limiter.hit(str(key), 0.01, 5))
        assert len(limiter) <= max_keys


def test_idle_buckets_are_evicted_as_other_keys_are_hit() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    for i in range(100):
        run(limiter.hit(f"k{i}", rate=10, burst=10))
    assert len(limiter) == 100
    clock.advance(1)  # every bucket has refilled: equivalent to absent
    for _ in range(60):
        run(limiter.hit("hot", rate=10, burst=10))
        clock.advance(0.001)
    assert len(limiter) == 1  # two evictions per hit: 100 idle buckets gone within 50 hits


def test_burst_then_steady_refill() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    assert [run(limiter.hit("k", rate=2, burst=3)).allowed for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert run(limiter.hit("k", rate=2, burst=3)).allowed
    assert not run(limiter.hit("k", rate=2, burst=3)).allowed


def test_keys_are_independent() -> None:
    limiter = MemoryLimiter(FakeClock())
    assert run(limiter.hit("a", 1, 1)).allowed
    assert not run(limiter.hit("a", 1, 1)).allowed
    assert run(limiter.hit("b", 1, 1)).allowed


def test_impossible_hits_say_so() -> None:
    limiter = MemoryLimiter(FakeClock())
    assert run(limiter.hit("k", rate=1, burst=2, cost=3)) == Decision(False, math.inf)
    assert run(limiter.hit("z", rate=0, burst=1)).allowed
    assert run(limiter.hit("z", rate=0, burst=1)) == Decision(False, math.inf)


def test_clock_stepping_back_mints_nothing() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    assert run(limiter.hit("k", rate=1, burst=1)).allowed
    clock.advance(-100)
    assert not run(limiter.hit("k", rate=1, burst=1)).allowed
    clock.advance(100.5)  # back to +0.5 s: half a token, not 100
    assert not run(limiter.hit("k", rate=1, burst=1)).allowed


@pytest.mark.anyio
async def test_aclose() -> None:
    limiter = MemoryLimiter()
    assert (await limiter.hit("k", 1, 1)).allowed
    await limiter.aclose()
    assert len(limiter) == 0
