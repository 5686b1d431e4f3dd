"""`openkvs serve` (what `make run` runs) prints the console's address next to the first token, and that address
serves the console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


def test_serve_prints_the_console_address_next_to_the_token(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "openkvs", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # bounded by pytest's timeout should the server hang
            lines.append(line)
            if line.startswith("Try it:"):
                break
        text = "".join(lines)
        console = re.search(r"^Web console: (\S+)", text, re.M)
        token = re.search(r"^  (okvs_\S+)$", text, re.M)
        assert console and token, text
        assert console[1] == f"http://127.0.0.1:{port}/console/"
        deadline = time.monotonic() + 60
        while True:  # the lines come before uvicorn listens
            try:
                page = httpx.get(console[1], timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert page.status_code == 200 and "<title>openkvs console</title>" in page.text
        signed_in = httpx.get(f"http://127.0.0.1:{port}/v2/key-value-stores", headers={"Authorization": f"Bearer {token[1]}"})
        assert signed_in.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
