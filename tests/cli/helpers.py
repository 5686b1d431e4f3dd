"""Helpers of the command-line tests: a command run against a server, and a slow proxy to catch a transfer midway."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from tests.clirun import Ran, openkvs_here


def client_env(server: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "APIFY_"))}
    return {**env, "OPENKVS_URL": server.url, "OPENKVS_TOKEN": server.token, "PYTHONUNBUFFERED": "1", **extra}


def run(server: Any, *args: str, cwd: Any = None, check: bool = True, **env: str) -> Ran:
    """``openkvs ARGS`` against ``server`` with only OPENKVS_URL/OPENKVS_TOKEN (and ``env``) set, run in this
    process (tests/clirun.py): what it prints and its exit code. Tests of Ctrl-C or a terminal start a process
    themselves, with ``client_env``."""
    out = openkvs_here(*args, env={"OPENKVS_URL": server.url, "OPENKVS_TOKEN": server.token, **env}, cwd=cwd,
                       unset=("OPENKVS_", "APIFY_"), keep=())
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
