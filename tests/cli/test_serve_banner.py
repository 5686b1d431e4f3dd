"""What `openkvs serve` prints first (issue 13): where it listens, which storage, and the web console's address, at
--public-url when one is set (behind a proxy, the address browsers reach; it said the listening address); on the
first start, the curl line to try at that address too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port


def banner(*args: str, count: int = 2) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}
    proc = subprocess.Popen([sys.executable, "-m", "openkvs", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return lines


def test_banner_names_the_storage_and_the_console_at_the_public_url(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    lines = banner("--port", str(port), "--data-dir", str(data), "--public-url", "https://kvs.example.com", count=10)
    assert lines[:2] == [
        f"openkvs http://127.0.0.1:{port} (storage: SQLite in {data}, workers: 1)",
        "Web console: https://kvs.example.com/console/ (sign in with an API token)",
    ]
    token = lines[5].strip()
    assert lines[7:] == ["Try it:", "",
                         f"  curl -X POST -H 'Authorization: Bearer {token}' 'https://kvs.example.com/v2/key-value-stores?name=demo'"]
    port = free_port()
    assert banner("--port", str(port), "--data-dir", str(data))[1] == (
        f"Web console: http://127.0.0.1:{port}/console/ (sign in with an API token)"
    )
