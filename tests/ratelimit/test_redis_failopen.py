"""The Redis limiter on a slow or absent Redis: a slow answer within the configured timeout still counts (a busy
machine must not switch the limits off), and failing open is logged at warning at most once per interval with
the number of requests let through unchecked (issue 11, item 19)."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from openkvs.config import Settings
from openkvs.ratelimit import RedisLimiter, make_limiter

from .helpers import REDIS_TEST_TIMEOUT, FakeClock, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

REPLY_DELAY = 0.8  # longer than the limiter's old fixed 0.5 s timeout


class SlowProxy:
    """A TCP proxy in front of Redis that holds every reply back REPLY_DELAY seconds: Redis as seen from a machine
    short of CPU."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        try:
            await asyncio.gather(pipe(c_reader, s_writer, 0), pipe(s_reader, c_writer, REPLY_DELAY))
        except asyncio.CancelledError:
            pass  # closed by __aexit__: end quietly (asyncio logs a cancelled connection handler as an error)


def _redis_port(url: str) -> int:
    match = re.match(r"redis://[^:/]+:(\d+)", url)
    return int(match.group(1)) if match else 6379


async def test_a_slow_redis_within_the_configured_timeout_still_limits(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openkvs.ratelimit")
    settings = Settings.load(environ={"OPENKVS_REDIS_TIMEOUT": str(REDIS_TEST_TIMEOUT)})
    async with SlowProxy(_redis_port(redis_url)) as slow_url:
        limiters = [make_limiter(slow_url, timeout=settings.redis_timeout) for _ in range(2)]
        for limiter in limiters:
            limiter._prefix = prefix  # type: ignore[attr-defined]  # this test's own keys
        try:
            results = await asyncio.gather(
                *(limiter.hit("shared", rate=1e-6, burst=10) for limiter in limiters for _ in range(20))
            )
        finally:
            for limiter in limiters:
                await limiter.aclose()
    assert sum(r.allowed for r in results) == 10
    assert not [r for r in caplog.records if r.name == "openkvs.ratelimit" and r.levelno >= logging.WARNING]


def test_the_timeout_is_a_setting() -> None:
    assert Settings.load(environ={}).redis_timeout == 2.0
    assert Settings.load(environ={"OPENKVS_REDIS_TIMEOUT": "7.5"}).redis_timeout == 7.5
    with pytest.raises(ValueError):
        Settings.load(environ={"OPENKVS_REDIS_TIMEOUT": "0"})


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _count(message: str) -> int:
    match = re.search(r"check: (\d+) since the last warning", message)
    assert match, message
    return int(match.group(1))


async def test_failing_open_warns_at_most_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openkvs.ratelimit")
    now = FakeClock(0.0)
    # retry_interval=0: every hit really tries (and fails) to reach the dead port.
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_interval=0, warn_interval=60, monotonic=now)
    try:
        for _ in range(5):
            assert (await limiter.hit("k", rate=1e-6, burst=1)).allowed
        assert [_count(m) for m in _warnings(caplog)] == [1]
        now.advance(30)
        for _ in range(5):
            assert (await limiter.hit("k", rate=1e-6, burst=1)).allowed
        assert len(_warnings(caplog)) == 1  # within the interval: counted, not logged
        now.advance(31)
        assert (await limiter.hit("k", rate=1e-6, burst=1)).allowed
        warnings = _warnings(caplog)
        assert [_count(m) for m in warnings] == [1, 10]
        assert "Redis unavailable" in warnings[1] and "ConnectionError" in warnings[1]
    finally:
        await limiter.aclose()


async def test_requests_the_breaker_lets_through_are_counted_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openkvs.ratelimit")
    now = FakeClock(0.0)
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_interval=10, warn_interval=60, monotonic=now)
    try:
        for _ in range(100):  # one probe fails, 99 are not even sent while the breaker is open
            assert (await limiter.hit("k", 1, 1)).allowed
        now.advance(61)
        assert (await limiter.hit("k", 1, 1)).allowed
        assert [_count(m) for m in _warnings(caplog)] == [1, 100]
    finally:
        await limiter.aclose()
