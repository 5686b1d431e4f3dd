"""Rate limiting: token buckets that hold across processes and nodes (spec section 7).

    Limiter (protocol: hit(key, rate, burst, cost) -> Decision, aclose())
     ├── MemoryLimiter   one process; exact and O(1), bounded memory
     └── RedisLimiter    shared through Redis, one Lua script per hit; fails open when Redis is down
    RateLimitPolicy      the API's limits: a caller bucket plus one store bucket -> Verdict
    client_ip            whom to count a tokenless request against, honouring trusted proxies
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Decision, Limiter
from .clientip import client_ip
from .memory import MemoryLimiter
from .policy import RateLimitPolicy, Verdict

if TYPE_CHECKING:
    from .redis import RedisLimiter


def make_limiter(
    redis_url: str | None, *, timeout: float | None = None, clock: Callable[[], float] | None = None
) -> Limiter:
    """A ``RedisLimiter`` when a Redis URL is configured (needed with several processes or nodes), else a
    ``MemoryLimiter``. ``timeout``: seconds to wait for Redis (``--redis-timeout``); None is its default.
    ``clock``: the buckets' time in seconds; None is the real one (``time.monotonic``, or Redis ``TIME`` shared by
    every node). Only tests pass one (a clock they move by hand, so that counts do not depend on how fast the
    machine is); no setting reaches it."""
    if redis_url:
        from .redis import RedisLimiter  # redis.asyncio only where Redis is configured: ~45 ms of every start

        if timeout is None:
            return RedisLimiter(redis_url, clock)
        return RedisLimiter(redis_url, clock, socket_timeout=timeout)
    return MemoryLimiter() if clock is None else MemoryLimiter(clock)


def __getattr__(name: str) -> Any:
    if name == "RedisLimiter":  # imported on first use (see make_limiter)
        from .redis import RedisLimiter

        return RedisLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Decision",
    "Limiter",
    "MemoryLimiter",
    "RateLimitPolicy",
    "RedisLimiter",
    "Verdict",
    "client_ip",
    "make_limiter",
]
