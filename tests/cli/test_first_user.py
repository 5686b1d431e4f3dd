"""`openkvs serve` makes the user ``admin`` (and prints its token) only on a storage without users: an operator who
followed the README's PostgreSQL steps (`openkvs users create alice`, then `serve`) got an ``admin`` besides, whose
token went to the service's log, and which no command removes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}


def openkvs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openkvs", *args], capture_output=True, text=True, env=ENV,
                          timeout=60, check=True)


def test_serve_makes_no_admin_where_there_are_users(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    openkvs("migrate", "--data-dir", data)  # the README's steps: the database, a user, then the server
    token = openkvs("users", "create", "alice", "--data-dir", data).stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "openkvs", "serve", "--port", str(port), "--data-dir", data],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**ENV, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up: alice's token works
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/key-value-stores",
                              headers={"Authorization": f"Bearer {token}"}, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=30)
    assert "Created user" not in printed and "okvs_" not in printed, printed
    assert [line.split()[0] for line in openkvs("users", "list", "--data-dir", data).stdout.splitlines()] == ["alice"]
