"""The limiter contract and the token-bucket arithmetic every backend shares.

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens a second. A hit that costs ``cost`` tokens is
allowed when the bucket holds that many, and then takes them. A bucket nobody has touched is full, so a bucket
that has refilled to ``burst`` can be forgotten: it is equivalent to an absent one. Backends rely on that to
bound their memory (``MemoryLimiter`` evicts, Redis keys expire).

``redis.py`` runs the same arithmetic in Lua; keep the two in step (a test compares them decision by decision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Float slack in the "enough tokens?" comparison, so that waiting exactly ``retry_after`` is always enough even
# when ``ts + retry_after - ts`` rounds a hair short. It lets through at most 1e-9 tokens per hit too many.
EPSILON = 1e-9
# Padding added to ``retry_after`` for the same reason, sized for clocks of up to ~1e9 seconds (ulp ~1e-7).
RETRY_PAD = 1e-6


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one hit.

    ``retry_after`` is 0 when allowed; when denied it is the number of seconds after which the same hit would be
    allowed (``math.inf`` when it never will be: ``cost > burst`` or ``rate == 0``).
    """

    allowed: bool
    retry_after: float


ALLOWED = Decision(True, 0.0)


class Limiter(Protocol):
    """A set of token buckets addressed by key.

    ``hit`` is one atomic step: refill, decide, take. Two concurrent hits on one key never both spend the
    same token, whatever the backend (that is the point of not doing get-then-set: see litestar#4700).
    ``rate`` and ``burst`` are passed on every call rather than stored, so a bucket follows the configuration
    of whoever hits it.
    """

    async def hit(self, key: str, rate: float, burst: float, cost: float = 1) -> Decision: ...

    async def hit_chain(self, hits: Sequence[tuple[str, float, float]]) -> Decision:
        """One request against several buckets ``(key, rate, burst)``, in order, as one atomic step: take one
        token from each; the first bucket that refuses ends the chain (buckets before it stay spent) and its
        decision is returned."""
        ...

    async def aclose(self) -> None: ...


def take(tokens: float, ts: float, now: float, rate: float, burst: float, cost: float) -> tuple[bool, float, float]:
    """Refill a bucket last written at ``ts`` up to ``now`` and try to take ``cost`` tokens.

    Returns ``(allowed, tokens_left, retry_after)``. A clock that went backwards refills nothing (never mint
    tokens from a clock step); the caller stores ``now`` as the new ``ts`` either way.
    """
    elapsed = now - ts
    if elapsed > 0:
        tokens = min(burst, tokens + elapsed * rate)
    if tokens + EPSILON >= cost:
        return True, tokens - cost, 0.0
    return False, tokens, wait_time(cost - tokens, rate, burst, cost)


def wait_time(missing: float, rate: float, burst: float, cost: float) -> float:
    """Seconds until ``missing`` more tokens have accrued (``inf`` if they never will)."""
    if cost > burst + EPSILON or rate <= 0:
        return math.inf
    return missing / rate + RETRY_PAD


def full_after(tokens: float, rate: float, burst: float) -> float:
    """Seconds until a bucket holding ``tokens`` is full again, i.e. indistinguishable from an absent one."""
    if tokens >= burst:
        return 0.0
    if rate <= 0:
        return math.inf
    return (burst - tokens) / rate
