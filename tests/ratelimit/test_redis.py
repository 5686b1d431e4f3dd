"""RedisLimiter against a real Redis: same decisions as the in-memory buckets, atomic across clients and
processes, fail-open with one warning per outage, and recovery without help."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
import time

import pytest
import redis

from openkvs.ratelimit import MemoryLimiter, RedisLimiter
from openkvs.ratelimit.redis import SCRIPT_SHA

from .helpers import REDIS_TEST_TIMEOUT, FakeClock, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_same_decisions_as_memory_limiter(redis_url: str, prefix: str) -> None:
    for seed in range(5):
        rng = random.Random(seed)
        clock = FakeClock(rng.uniform(0, 1e6))
        mem = MemoryLimiter(clock)
        red = RedisLimiter(redis_url, clock, prefix=f"{prefix}{seed}:", socket_timeout=REDIS_TEST_TIMEOUT)
        rate, burst = rng.choice([(0.5, 1), (2, 3), (10, 10), (4166.67, 4166.67), (0.01, 100)])
        try:
            for _ in range(200):
                clock.advance(rng.choice([0, 0, 0.001, 0.1, 0.5, 1, 3]) * rng.random())
                key = rng.choice("ab")
                cost = rng.choice([1, 1, 1, 0.5, 2])
                want = await mem.hit(key, rate, burst, cost)
                got = await red.hit(key, rate, burst, cost)
                assert got.allowed == want.allowed
                assert got.retry_after == pytest.approx(want.retry_after, rel=1e-9, abs=1e-12)
        finally:
            await red.aclose()


async def test_server_time_and_refill(redis_url: str, prefix: str) -> None:
    limiter = RedisLimiter(redis_url, prefix=prefix, socket_timeout=REDIS_TEST_TIMEOUT)  # no clock: Redis TIME
    try:
        # A slow refill (1 token a second), so four round trips on a busy machine still land before it.
        results = [(await limiter.hit("k", rate=1, burst=3)) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert 0 < results[-1].retry_after <= 1.0 + 1e-3
        await asyncio.sleep(results[-1].retry_after)
        assert (await limiter.hit("k", rate=1, burst=3)).allowed
    finally:
        await limiter.aclose()


async def test_idle_keys_expire(redis_url: str, prefix: str) -> None:
    limiter = RedisLimiter(redis_url, prefix=prefix, socket_timeout=REDIS_TEST_TIMEOUT)
    try:
        await limiter.hit("k", rate=10, burst=10, cost=5)
        ttl = redis.Redis.from_url(redis_url).pttl(prefix + "k")
        # 5 tokens missing at 10/s: full (and so forgettable) after 0.5 s, plus 1 s of slack.
        assert 1000 < ttl <= 1500
    finally:
        await limiter.aclose()


async def test_a_bucket_on_a_passed_clock_is_not_forgotten_by_redis_time(redis_url: str, prefix: str) -> None:
    """With a clock passed in (the tests' hand-moved one), Redis's expiry in its own time would forget a spent
    bucket while that clock stands still: the bucket is kept for the day instead."""
    limiter = RedisLimiter(redis_url, FakeClock(1000.0), prefix=prefix, socket_timeout=REDIS_TEST_TIMEOUT)
    try:
        assert (await limiter.hit("k", rate=10, burst=10, cost=10)).allowed
        assert redis.Redis.from_url(redis_url).pttl(prefix + "k") > 3_600_000  # full again after 1 s of Redis time
        assert not (await limiter.hit("k", rate=10, burst=10)).allowed
    finally:
        await limiter.aclose()


async def _hammer(limiter: RedisLimiter, n: int) -> int:
    results = await asyncio.gather(*(limiter.hit("shared", rate=1, burst=100) for _ in range(n)))
    return sum(r.allowed for r in results)


# The hammer tests count exactly: their limiters read a clock that never moves (nothing refills however long a busy
# machine takes), Redis gets REDIS_TEST_TIMEOUT to answer, and a limiter that failed open (which lets requests
# through unchecked, so the count would come out high) is reported as that, not as a wrong count.


async def test_two_clients_hammering_one_key_accept_exactly_burst(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openkvs.ratelimit")
    still = FakeClock()
    a = RedisLimiter(redis_url, still, prefix=prefix, socket_timeout=REDIS_TEST_TIMEOUT)
    b = RedisLimiter(redis_url, still, prefix=prefix, socket_timeout=REDIS_TEST_TIMEOUT)
    try:
        accepted = await asyncio.gather(_hammer(a, 300), _hammer(b, 300))
        assert not caplog.records, [r.getMessage() for r in caplog.records]  # no hit went unchecked
        assert sum(accepted) == 100
    finally:
        await a.aclose()
        await b.aclose()


HAMMER = """
import asyncio, sys
from openkvs.ratelimit import RedisLimiter
async def main():
    limiter = RedisLimiter(sys.argv[1], lambda: 1000.0, prefix=sys.argv[2], socket_timeout=float(sys.argv[3]))
    results = await asyncio.gather(*(limiter.hit("shared", 1, 100) for _ in range(200)))
    print(sum(r.allowed for r in results))
    await limiter.aclose()
asyncio.run(main())
"""


def test_two_processes_hammering_one_key_accept_exactly_burst(redis_url: str, prefix: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", HAMMER, redis_url, prefix, str(REDIS_TEST_TIMEOUT)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert not any("Redis unavailable" in err for _, err in outs), outs  # no hit went unchecked (fail open)
    assert sum(int(out) for out, _ in outs) == 100


async def test_fails_open_and_warns_once_when_redis_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openkvs.ratelimit")
    # retry_interval=0 disables the breaker, so every hit really tries (and fails) to reach Redis.
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_interval=0)
    try:
        for _ in range(50):
            assert (await limiter.hit("k", rate=1e-6, burst=1)).allowed
    finally:
        await limiter.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unavailable" in warnings[0].getMessage()


async def test_circuit_breaker_leaves_a_dead_redis_alone() -> None:
    """A dead Redis is asked once per retry interval (the breaker's time is a clock the test moves), not once per
    hit: 1000 hits within the interval cost one connection attempt, the first hit after it probes again."""
    now = FakeClock(0.0)
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_interval=60, monotonic=now)
    calls = 0
    real = limiter._redis.evalsha

    async def counting(*args: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args)

    limiter._redis.evalsha = counting  # type: ignore[method-assign]
    try:
        for _ in range(1000):
            assert (await limiter.hit("k", 1, 1)).allowed
        assert calls == 1
        now.advance(59)
        assert (await limiter.hit("k", 1, 1)).allowed
        assert calls == 1
        now.advance(2)
        for _ in range(10):
            assert (await limiter.hit("k", 1, 1)).allowed
        assert calls == 2  # one probe, failed: the breaker is open again for the next 60 s
    finally:
        await limiter.aclose()


async def test_outage_and_recovery(redis_server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="openkvs.ratelimit")
    limiter = RedisLimiter(redis_server.url, retry_interval=0.05, socket_timeout=REDIS_TEST_TIMEOUT)
    try:
        assert [(await limiter.hit("k", 1e-6, 2)).allowed for _ in range(3)] == [True, True, False]

        redis_server.stop()
        assert all([(await limiter.hit("k", 1e-6, 2)).allowed for _ in range(20)])  # fail open

        redis_server.start()  # empty again (--save ""): a fresh bucket
        deadline = time.monotonic() + 60  # the retry interval is 50 ms: only a hang reaches this
        results = []
        while time.monotonic() < deadline:
            results.append((await limiter.hit("k", 1e-6, 2)).allowed)
            if results[-1] is False:
                break
            await asyncio.sleep(0.01)
        assert results[-1] is False, "limits did not apply again after Redis came back"
        # Once back, exactly the burst got through before the denial (everything before was the outage).
        assert results[-3:] == [True, True, False]

        messages = [r.getMessage() for r in caplog.records]
        assert sum("Redis unavailable" in m for m in messages) == 1
        assert sum("reachable again" in m for m in messages) == 1
    finally:
        await limiter.aclose()


async def test_script_cache_loss_is_survived(redis_server) -> None:  # type: ignore[no-untyped-def]
    # On a private server: SCRIPT FLUSH on the shared one would disturb other tests.
    limiter = RedisLimiter(redis_server.url, socket_timeout=REDIS_TEST_TIMEOUT)
    try:
        assert (await limiter.hit("k", 1, 5)).allowed
        admin = redis.Redis(port=redis_server.port)
        admin.script_flush()
        assert admin.script_exists(SCRIPT_SHA) == [False]
        assert (await limiter.hit("k", 1, 5)).allowed  # NOSCRIPT -> EVAL, which also reloads it
        assert admin.script_exists(SCRIPT_SHA) == [True]
    finally:
        await limiter.aclose()


async def test_chain_same_decisions_as_memory_limiter(redis_url: str, prefix: str) -> None:
    """The one-round-trip chain (caller's bucket, then the store's) decides exactly as the in-memory chain."""
    for seed in range(4):
        rng = random.Random(100 + seed)
        clock = FakeClock(rng.uniform(0, 1e6))
        mem = MemoryLimiter(clock)
        red = RedisLimiter(redis_url, clock, prefix=f"{prefix}c{seed}:", socket_timeout=REDIS_TEST_TIMEOUT)
        try:
            for _ in range(200):
                clock.advance(rng.choice([0, 0, 0.001, 0.1, 0.5, 1]) * rng.random())
                chain = [("who:" + rng.choice("uv"), 5.0, 5.0), ("store:" + rng.choice("st"), 2.0, 3.0)]
                want = await mem.hit_chain(chain)
                got = await red.hit_chain(chain)
                assert got.allowed == want.allowed
                assert got.retry_after == pytest.approx(want.retry_after, rel=1e-9, abs=1e-12)
            # and the buckets themselves agree afterwards: a refused store hit still spent the caller's token
            for key, rate, burst in (("who:u", 5.0, 5.0), ("store:s", 2.0, 3.0)):
                assert (await red.hit(key, rate, burst)).allowed == (await mem.hit(key, rate, burst)).allowed
        finally:
            await red.aclose()
