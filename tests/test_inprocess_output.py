"""What an in-process test server leaves behind: its access log in ``server.log()`` rather than in the test run's
output (CI's log had request lines between the dots), and no Redis connection once it has stopped."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL, Server, shared_redis_url


def wait_for(check: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_access_log_goes_to_the_servers_log_not_stdout(
    start_server: Callable[..., Server], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    marker = f"/v2/key-value-stores/no-such-{secrets.token_hex(4)}"
    assert httpx.get(server.url + marker, headers={"Authorization": f"Bearer {server.token}"}).status_code == 404
    with server.client() as c:
        assert c.get(marker + "-asgi").status_code == 404
    assert wait_for(lambda: marker + "-asgi" in server.log()), server.log()  # lines are written in batches
    line = next(line for line in server.log().splitlines() if f"GET {marker} HTTP/1.1" in line)
    assert line.endswith("ms") and " 404 " in line, line
    out, err = capfd.readouterr()
    assert marker not in out and marker not in err


@pytest.mark.redis
def test_the_readiness_checks_redis_connection_is_closed_at_shutdown(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    shared_redis_url()  # skips (or fails in CI) without Redis
    name = f"okvs-ready-{secrets.token_hex(4)}"  # this server's connections, among everyone's on the shared Redis
    server = start_server(tmp_path, "sqlite", "--redis-url", f"{REDIS_URL}?client_name={name}", in_process=True)
    watcher = redis.Redis.from_url(REDIS_URL)

    def connected() -> bool:
        return any(c.get("name") == name for c in watcher.client_list())

    try:
        with server.anon() as c:
            r = c.get("/health/ready")
        assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok", r.text
        assert connected()
        server.stop()
        assert wait_for(lambda: not connected()), "the readiness check's Redis connection outlived its server"
    finally:
        watcher.close()
