"""Shared by the rate-limit tests (tests/ratelimit is a package, like tests/storage, so test module names cannot clash)."""

from __future__ import annotations

import os
import socket

# Tests that need Redis to answer give it this long (seconds): a busy machine (the suite runs beside other work)
# must not make the limiter fail open and a count come out wrong. OPENKVS_TEST_REDIS_TIMEOUT overrides it.
REDIS_TEST_TIMEOUT = float(os.environ.get("OPENKVS_TEST_REDIS_TIMEOUT", "30"))


class FakeClock:
    """A clock that moves only when told to, so tests never sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
