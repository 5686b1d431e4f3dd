"""What every `openkvs serve` and command start pays for: the Redis client (~45 ms of CPU to import) only where
Redis is configured. The suite starts ~70 servers, and users start one on every restart."""

import subprocess
import sys


def test_the_app_and_the_cli_start_without_importing_redis() -> None:
    code = "import sys, openkvs.app, openkvs.cli, openkvs.server; print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_redis_url_still_gives_the_shared_limiter() -> None:
    from openkvs.ratelimit import RedisLimiter, make_limiter

    assert isinstance(make_limiter("redis://127.0.0.1:6379/0"), RedisLimiter)
