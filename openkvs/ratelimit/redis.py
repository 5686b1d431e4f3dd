"""Token buckets in Redis, shared by every process and node that points at the same server.

Each hit is ONE Lua script (read, refill, decide, write) so it is atomic on the server: no get-then-set race
between workers (litestar#4700). Time comes from Redis ``TIME`` inside the script so nodes with skewed clocks
still agree; tests may inject a clock instead. Each bucket is one hash under ``openkvs:rl:<key>`` that expires
once it would have refilled, so idle keys vanish. A request's buckets (its caller's, then its store's) go through
the script together, in one round trip.

Rate limiting must never take the API down with it: if Redis is unreachable, errors or does not answer within
``socket_timeout``, hits are allowed (fail open). After a failure Redis is left alone for ``retry_interval``
seconds (a circuit breaker) so a dead server costs one slow request per interval, not one per request; then a
single hit probes it again.

Failing open is logged at warning, at most once per ``warn_interval`` seconds, with the number of requests let
through unchecked since the previous line: an outage that flaps (say, timeouts on a machine short of CPU, which is
exactly when limits matter) stays visible without flooding the log. A note at info says when checks work again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from openkvs.config import BY_NAME

from .base import ALLOWED, EPSILON, RETRY_PAD, Decision

logger = logging.getLogger("openkvs.ratelimit")

PREFIX = "openkvs:rl:"

# One step over one or more buckets in one round trip (a request spends from its caller's bucket and then from its
# store's): KEYS are the buckets in order, ARGV = now, eps, pad, then rate, burst, cost per bucket. The first bucket
# that refuses ends it; the ones before it stay spent, exactly as separate hits in that order would. With several
# keys they must live on one server (not spread over a Redis Cluster); a single-key call has no such need.
# Same arithmetic as base.take/wait_time/full_after; a test checks both give the same decisions. Numbers are
# written with %.17g because Redis would otherwise turn Lua numbers into strings with 14 digits (losing precision
# on timestamps) and into truncated integers in replies (losing retry_after's fraction). A denied bucket writes
# nothing: its stored state yields the same refill later. A bucket expires once full again (then it equals an
# absent key) plus a second of slack; a day at most when it never refills (rate 0). Expiry runs on Redis's own
# clock: with a clock passed in (tests), when the bucket is full again in that clock's time is not Redis's to know,
# so it keeps the day (on a busy machine a spent bucket expired in real time mid-test, a second bucket's worth).
SCRIPT = """
local now = tonumber(ARGV[1])
local eps = tonumber(ARGV[2])
local pad = tonumber(ARGV[3])
local own_time = now == nil
if own_time then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i + 1])
  local burst = tonumber(ARGV[3 * i + 2])
  local cost = tonumber(ARGV[3 * i + 3])
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  local elapsed = now - ts
  if elapsed > 0 then
    tokens = math.min(burst, tokens + elapsed * rate)
  end
  if tokens + eps < cost then
    local retry = 'inf'
    if cost <= burst + eps and rate > 0 then
      retry = string.format('%.17g', (cost - tokens) / rate + pad)
    end
    return {0, retry}
  end
  tokens = tokens - cost
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
  local ttl = 86400000
  if rate > 0 and own_time then
    ttl = math.min(ttl, math.ceil((burst - tokens) / rate * 1000) + 1000)
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return {1, '0'}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

# Everything that means "Redis cannot answer properly right now". OSError covers socket errors raised before
# redis-py wraps them; TimeoutError covers asyncio timeouts.
UNAVAILABLE = (RedisError, OSError, TimeoutError)

DEFAULT_TIMEOUT: float = BY_NAME["redis_timeout"].default
WARN_INTERVAL = 60.0  # seconds between two fail-open warnings at most


class RedisLimiter:
    def __init__(
        self,
        url: str,
        clock: Callable[[], float] | None = None,
        *,
        prefix: str = PREFIX,
        socket_timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = 1.0,
        max_connections: int = 64,
        warn_interval: float = WARN_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._prefix = prefix
        self._retry_interval = retry_interval
        self._warn_interval = warn_interval
        self._monotonic = monotonic  # the breaker's and the warnings' time; tests inject one
        # Timeouts short enough that a dead or stalled Redis delays a request by a few seconds at most, but not
        # so short that a busy machine (a slow reply, a queue for a pooled connection) fails open: the breaker
        # already makes a dead server cost one slow request per interval, not one per request. One immediate
        # retry on connection errors replaces a pooled connection that broke (say, Redis restarted) with a fresh
        # one, so a stale socket does not turn into a spurious outage. Not on timeouts: the script may have run.
        # A *blocking* pool: redis-py's default pool raises "Too many connections" beyond 100 concurrent
        # commands, which would fail open exactly under load; here a burst queues for a connection instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._down = False  # inside an outage (not yet recovered)
        self._skip_until = 0.0  # self._monotonic() before which Redis is not asked at all
        self._unchecked = 0  # requests let through unchecked since the last warning
        self._warned_at: float | None = None  # when the last fail-open warning was logged
        self._last_error = ""  # the latest failure, for the warning

    async def hit(self, key: str, rate: float, burst: float, cost: float = 1) -> Decision:
        args = ("" if self._clock is None else repr(self._clock()), EPSILON, RETRY_PAD, rate, burst, cost)
        return await self._run([self._prefix + key], args)

    async def hit_chain(self, hits: Sequence[tuple[str, float, float]]) -> Decision:
        args: list[str | float] = ["" if self._clock is None else repr(self._clock()), EPSILON, RETRY_PAD]
        for _, rate, burst in hits:
            args += [rate, burst, 1]
        return await self._run([self._prefix + key for key, _, _ in hits], args)

    async def _run(self, keys: list[str], args: Sequence[str | float]) -> Decision:
        if self._down:
            now = self._monotonic()
            if now < self._skip_until:
                self._let_through()
                return ALLOWED
            # Half-open: this hit probes; concurrent ones keep skipping until it has answered.
            self._skip_until = now + self._retry_interval
        try:
            try:
                allowed, retry_after = await self._redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            except NoScriptError:
                # First use on this server, or it restarted / ran SCRIPT FLUSH. EVAL also caches the script.
                allowed, retry_after = await self._redis.eval(SCRIPT, len(keys), *keys, *args)
        except UNAVAILABLE as exc:
            self._failed(exc)
            return ALLOWED
        if self._down:
            self._down = False
            logger.info(
                "rate limiter: Redis is reachable again; limits apply again (%d more request(s) were let through "
                "unchecked since the last warning)",
                self._unchecked,
            )
            self._unchecked = 0
        if allowed:
            return ALLOWED
        return Decision(False, float(retry_after))

    def _failed(self, exc: BaseException) -> None:
        self._skip_until = self._monotonic() + self._retry_interval
        self._down = True
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._let_through()

    def _let_through(self) -> None:
        """Count a request allowed without a check; warn if the last warning is ``warn_interval`` old."""
        self._unchecked += 1
        now = self._monotonic()
        if self._warned_at is not None and now - self._warned_at < self._warn_interval:
            return
        logger.warning(
            "rate limiter: Redis unavailable (%s); letting requests through without a rate-limit check: %d since "
            "the last warning (warnings at most every %g s)",
            self._last_error,
            self._unchecked,
            self._warn_interval,
        )
        self._warned_at = now
        self._unchecked = 0

    async def aclose(self) -> None:
        await self._redis.aclose()
