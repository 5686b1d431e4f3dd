"""How many ZIP downloads this process serves at once. Each one holds a storage snapshot (a SQLite read
transaction and lease, or a PostgreSQL connection) for as long as its client reads, so their number is capped in
all and per caller (a user, or a client IP without a token); over a cap the answer is 429 at once, never a wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from openkvs import errors

RETRY_AFTER_SECONDS = 10  # a download lasts seconds to minutes: sooner retries would mostly be refused again


class DownloadSlots:
    def __init__(self, total: int, per_caller: int) -> None:
        self.total = total
        self.per_caller = per_caller
        self._open = 0
        self._by_caller: dict[str, int] = {}

    @contextmanager
    def take(self, caller: str) -> Iterator[None]:
        """One slot for ``caller`` while the block runs; 429 ``rate-limit-exceeded`` if none is free. Runs on
        the event loop only, so plain counters need no lock."""
        mine = self._by_caller.get(caller, 0)
        if self._open >= self.total or mine >= self.per_caller:
            raise errors.RateLimitExceeded(headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self._open += 1
        self._by_caller[caller] = mine + 1
        try:
            yield
        finally:
            self._open -= 1
            left = self._by_caller[caller] - 1
            if left:
                self._by_caller[caller] = left
            else:
                del self._by_caller[caller]
