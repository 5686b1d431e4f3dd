"""Shared by the rate-limit tests (tests/ratelimit is a package, like tests/storage, so test module names cannot clash)."""

from __future__ import annotations

import socket


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
