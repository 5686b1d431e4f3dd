"""Helpers of the command-line tests: a command run against a server."""

from __future__ import annotations

import os
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
