"""The API's limits (spec section 7) on top of a ``Limiter``: which buckets a request spends from.

Every request spends from its caller's bucket (``user:<id>``, or ``ip:<addr>`` without a token). A store-scoped
request also spends from exactly one store bucket: record operations from the record bucket (200/s by
default), pushes of dataset items from the push bucket (400/s, API-datasets.md 10), everything else from the store
bucket (60/s). So a record GET never eats into the 60/s budget.

Bucket sizes (bursts): every bucket holds one second's worth of its rate, so the per-second figure sent in
``X-RateLimit-Limit`` is also what a client may really send within any one second. For the per-user
limit that is 250000/60 = 4166.67 tokens, refilled at 4166.67/s: a client pacing itself gets its full 250,000
a minute (in fact up to one second's worth more in the first minute), while one that fires everything at once is
held to the per-second figure instead of landing 250,000 requests in a second on the store.
``user_burst_seconds`` makes the user bucket larger if bursty clients need it.

Request queues have two more per-store budgets (API-request-queues.md section 10), named by ``budget``:
``queue-requests`` (single-request operations, 400/s) and ``queue-batch`` (batch add and delete, head/lock, 40/s);
their other operations spend from the store bucket like any store's.

The user bucket is checked first. A caller denied there spends nothing from the store's bucket, so one
flooding caller cannot use up a store's budget with requests that were refused anyway. A request refused by a
store bucket still counts against its caller (it was a request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import ALLOWED, RETRY_PAD, Decision, Limiter


@dataclass(frozen=True, slots=True)
class Verdict:
    """``retry_after_seconds`` is for ``Retry-After`` (0 when allowed, else at least 1); ``limit`` is for
    ``X-RateLimit-Limit`` (the per-second limit of the resource the request addresses)."""

    allowed: bool
    retry_after_seconds: int
    limit: int

    @property
    def retry_after(self) -> int:
        # Alias: openkvs/api/common.py reads ``verdict.retry_after``; keep until the two names are settled.
        return self.retry_after_seconds


class RateLimitPolicy:
    def __init__(
        self,
        limiter: Limiter,
        per_user_per_minute: int = 250_000,
        per_store_per_second: int = 60,
        per_store_records_per_second: int = 200,
        *,
        budgets: dict[str, int] | None = None,
        user_burst_seconds: float = 1.0,
    ) -> None:
        """``budgets``: further per-store budgets a second by name (a request names one with ``budget``)."""
        self.budgets = dict(budgets or {})
        if per_store_per_second < 1 or per_store_records_per_second < 1 or any(
            v < 1 for v in self.budgets.values()
        ):
            raise ValueError("per-store limits must be at least 1 a second")
        if per_user_per_minute / 60 * user_burst_seconds < 1:
            raise ValueError("the user bucket must hold at least one request")
        self.limiter = limiter
        self._user_rate = per_user_per_minute / 60
        self._user_burst = self._user_rate * user_burst_seconds
        self._store_rate = float(per_store_per_second)
        self._records_rate = float(per_store_records_per_second)
        self.user_limit = per_user_per_minute // 60
        self.store_limit = per_store_per_second
        self.records_limit = per_store_records_per_second
        # A limiter whose hits never wait (MemoryLimiter): ``check_now`` decides without a coroutine.
        self._hit_chain_now = getattr(limiter, "hit_chain_now", None)
        # The allowed verdicts, one per limit (immutable): most requests get one of these.
        self._allowed: dict[int, Verdict] = {}
        # (identity, store_id, record_op, budget) -> the hits of ``_hits`` and the allowed verdict of ``_verdict``:
        # the same callers and stores come back request after request, and making these cost as much as the hits.
        self._chains: dict[tuple[str, str | None, bool, str | None],
                           tuple[tuple[tuple[str, float, float], ...], Verdict]] = {}
        # The same for ``check_user_now``, by the user's id: no ``user:<id>`` text made and hashed per request.
        self._user_chains: dict[tuple[str, str | None, bool, str | None],
                                tuple[tuple[tuple[str, float, float], ...], Verdict]] = {}

    def limit_for(self, store_id: str | None, record_op: bool, budget: str | None = None) -> int:
        """The ``X-RateLimit-Limit`` value for a request, without spending anything."""
        if store_id is None:
            return self.user_limit
        if budget is not None:
            return self.budgets[budget]
        return self.records_limit if record_op else self.store_limit

    async def check(self, identity: str, store_id: str | None, record_op: bool, budget: str | None = None) -> Verdict:
        """Spend one request for ``identity`` (``user:<id>`` or ``ip:<addr>``) and, if ``store_id`` is given,
        for that store: from its ``budget`` if named, else its record or store bucket. ``record_op`` without a store
        is treated as a plain user-level request."""
        verdict = self.check_now(identity, store_id, record_op, budget)
        if verdict is not None:
            return verdict
        hits = self._hits(identity, store_id, record_op, budget)
        if store_id is None:
            decision = await self.limiter.hit(*hits[0])
        else:  # one atomic step (one Redis round trip): the caller's bucket first, then the store's
            decision = await self.limiter.hit_chain(hits)
        return self._verdict(decision, store_id, record_op, budget)

    def check_now(self, identity: str, store_id: str | None, record_op: bool,
                  budget: str | None = None) -> Verdict | None:
        """``check`` without a coroutine when the limiter never waits (in memory); None when it would
        (Redis): then ``check``."""
        hit_chain_now = self._hit_chain_now
        if hit_chain_now is None:
            return None
        asked = (identity, store_id, record_op, budget)
        chain = self._chains.get(asked)
        if chain is None:
            chain = self._chain(asked)
        decision = hit_chain_now(chain[0])
        if decision.allowed:
            return chain[1]
        return Verdict(False, _retry_seconds(decision.retry_after), chain[1].limit)

    def check_user_now(self, user_id: str, store_id: str | None, record_op: bool,
                       budget: str | None = None) -> Verdict | None:
        """``check_now`` for the identity ``user:<user_id>`` (the same chain of buckets)."""
        hit_chain_now = self._hit_chain_now
        if hit_chain_now is None:
            return None
        asked = (user_id, store_id, record_op, budget)
        chain = self._user_chains.get(asked)
        if chain is None:
            chain = self._chain(("user:" + user_id, store_id, record_op, budget))
            if len(self._user_chains) >= 4096:  # bounded as ``_chains``
                self._user_chains.clear()
            self._user_chains[asked] = chain
        decision = hit_chain_now(chain[0])
        if decision.allowed:
            return chain[1]
        return Verdict(False, _retry_seconds(decision.retry_after), chain[1].limit)

    def _chain(self, asked: tuple[str, str | None, bool, str | None],
               ) -> tuple[tuple[tuple[str, float, float], ...], Verdict]:
        identity, store_id, record_op, budget = asked
        chain = (tuple(self._hits(identity, store_id, record_op, budget)),
                 self._verdict(ALLOWED, store_id, record_op, budget))
        if len(self._chains) >= 4096:  # bounded: a flood of distinct callers starts over
            self._chains.clear()
        self._chains[asked] = chain
        return chain

    def _hits(self, identity: str, store_id: str | None, record_op: bool,
              budget: str | None) -> list[tuple[str, float, float]]:
        # Key namespaces ("who:", "store:", "records:") keep callers and stores apart whatever the ids contain.
        who = ("who:" + identity, self._user_rate, self._user_burst)
        if store_id is None:
            return [who]
        if budget is not None:
            limit = float(self.budgets[budget])
            return [who, (f"{budget}:{store_id}", limit, limit)]
        if record_op:
            return [who, ("records:" + store_id, self._records_rate, self._records_rate)]
        return [who, ("store:" + store_id, self._store_rate, self._store_rate)]

    def _verdict(self, decision: Decision, store_id: str | None, record_op: bool, budget: str | None) -> Verdict:
        limit = self.limit_for(store_id, record_op, budget)
        if decision.allowed:
            verdict = self._allowed.get(limit)
            if verdict is None:
                verdict = self._allowed[limit] = Verdict(True, 0, limit)
            return verdict
        return Verdict(False, _retry_seconds(decision.retry_after), limit)


def _retry_seconds(retry_after: float) -> int:
    # Retry-After is whole seconds; round up so a client that obeys it is not refused again, but first take
    # off the limiter's float padding so an exact 1 s wait is not announced as 2. Infinite waits cannot happen
    # with the validated settings above; cap them rather than crash the header.
    if not math.isfinite(retry_after):
        return 3600
    return max(1, math.ceil(retry_after - RETRY_PAD))
