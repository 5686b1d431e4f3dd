"""What a rate-limit check costs: hits per second of MemoryLimiter, RedisLimiter and a full policy check.

    .venv/bin/python bench/ratelimit_cost.py [--redis redis://127.0.0.1:6379/0] [--seconds 2]

Sequential numbers are per-request latency (one hit awaited at a time); concurrent numbers are what one event
loop can push with many requests in flight (up to the pool's 64 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis

from openkvs.ratelimit import MemoryLimiter, RateLimitPolicy, RedisLimiter


async def sequential(limiter, keys: list[str], seconds: float) -> float:  # type: ignore[no-untyped-def]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            await limiter.hit(keys[n % len(keys)], 1e6, 1e6)
            n += 1
    return n / (time.perf_counter() - start)


async def concurrent(limiter, keys: list[str], seconds: float, tasks: int) -> float:  # type: ignore[no-untyped-def]
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await limiter.hit(keys[(count + i) % len(keys)], 1e6, 1e6)
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return count / (time.perf_counter() - start)


async def policy_checks(policy: RateLimitPolicy, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await policy.check(f"user:{n % 100}", f"store{n % 50}", n % 2 == 0)
        n += 1
    return n / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    s = args.seconds
    one, many = ["k"], [f"k{i}" for i in range(100_000)]

    mem = MemoryLimiter()
    print(f"memory  sequential, 1 key         {await sequential(mem, one, s):>12,.0f} hits/s")
    print(f"memory  sequential, 100k keys     {await sequential(mem, many, s):>12,.0f} hits/s")
    print(f"memory  policy.check (2 hits)     {await policy_checks(RateLimitPolicy(MemoryLimiter()), s):>12,.0f} /s")

    prefix = f"openkvs:rl:bench:{uuid.uuid4().hex}:"
    red = RedisLimiter(args.redis, prefix=prefix)
    try:
        print(f"redis   sequential, 1 key         {await sequential(red, one, s):>12,.0f} hits/s")
        print(f"redis   concurrent x64, 1 key     {await concurrent(red, one, s, 64):>12,.0f} hits/s")
        print(f"redis   concurrent x64, 100k keys {await concurrent(red, many, s, 64):>12,.0f} hits/s")
        print(f"redis   policy.check (2 hits)     {await policy_checks(RateLimitPolicy(red), s):>12,.0f} /s")
        dead = RedisLimiter("redis://127.0.0.1:1/0")  # refused: the breaker makes this the fail-open path
        print(f"redis   down (breaker open)       {await sequential(dead, one, s):>12,.0f} hits/s")
        await dead.aclose()
    finally:
        await red.aclose()
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=prefix + "*", count=10_000):
            client.delete(key)


if __name__ == "__main__":
    asyncio.run(main())
