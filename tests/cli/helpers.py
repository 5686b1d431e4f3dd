"""Helpers of the command-line tests: the CLI as a user runs it, and a slow proxy to catch a transfer midway."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any


def client_env(server: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "APIFY_"))}
    return {**env, "OPENKVS_URL": server.url, "OPENKVS_TOKEN": server.token, "PYTHONUNBUFFERED": "1", **extra}


def run(server: Any, *args: str, cwd: Any = None, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "openkvs", *args], env=client_env(server, **env), cwd=cwd,
        capture_output=True, text=True, timeout=120,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that passes the server's answers at ``rate`` bytes a second: a download through it
    takes long enough to be interrupted midway on any machine."""

    def __init__(self, port: int, rate: int = 256 * 1024) -> None:
        self.target, self.rate = port, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(down, up, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, self.rate), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
