"""`openkvs serve` (what `make run` runs) on a port another server holds: one line that says so and how to choose
another, exit status 1, and no first user made meanwhile (its token, shown only once, would be shown to no one
who could use it: the next start would not show it again)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def openkvs(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}
    return subprocess.run([sys.executable, "-m", "openkvs", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with socket.create_server(("127.0.0.1", 0)) as holder:  # listening, as another server would
        port = holder.getsockname()[1]
        out = openkvs("serve", "--port", str(port), "--data-dir", data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        f"Error: 127.0.0.1:{port} is in use (another openkvs, or another server): choose a free port with --port N "
        "or OPENKVS_PORT=N (`OPENKVS_PORT=N make run`)"
    ]
    assert "okvs_" not in out.stdout
    users = openkvs("users", "list", "--data-dir", data)
    assert users.returncode == 0 and users.stdout == "", users.stdout + users.stderr  # the token is still to come
