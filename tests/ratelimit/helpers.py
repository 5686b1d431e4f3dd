"""Shared by the rate-limit tests (tests/ratelimit is a package, like tests/storage, so test module names cannot clash)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from tests.conftest import unavailable

# Tests that need Redis to answer give it this long (seconds): a busy machine (the suite runs beside other work)
# must not make the limiter fail open and a count come out wrong. OPENKVS_TEST_REDIS_TIMEOUT overrides it.
REDIS_TEST_TIMEOUT = float(os.environ.get("OPENKVS_TEST_REDIS_TIMEOUT", "30"))


class FakeClock:
    """A clock that moves only when told to, so tests never sleep. ``tick``: seconds it moves after each reading
    (0: it stands still), for a test whose time must pass with the requests it makes, not with the wall clock."""

    def __init__(self, now: float = 1000.0, tick: float = 0.0) -> None:
        self.now = now
        self.tick = tick

    def __call__(self) -> float:
        now = self.now
        self.now += self.tick
        return now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on a free port that a test may stop and start again (empty: nothing is saved)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed; the outage tests start their own")
        self.binary: str = binary  # type: ignore[assignment]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
