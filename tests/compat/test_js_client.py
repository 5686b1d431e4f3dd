"""The official Apify JS client (`apify-client` from npm, pinned in tests/compat/js/package.json) against openkvs.

Needs Node.js (20+) and npm: skipped with a reason when `node` is missing, except in CI (env CI set), where that is a
failure. Dependencies are installed once into tests/compat/js/node_modules (`npm ci`, from the committed lock file)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Server

JS_DIR = Path(__file__).parent / "js"
IN_CI = bool(os.environ.get("CI"))


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"`{tool}` is not installed: the JS client compatibility test needs Node.js 20+ and npm"
        if IN_CI:
            pytest.fail(f"{reason} (CI is set, so this must not skip)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node = need("node")
    npm = need("npm")
    target = JS_DIR / "node_modules" / "apify-client"
    # Three test files use this fixture, and pytest-xdist may run them at once in different workers. `npm ci` first
    # deletes node_modules, so one worker's install would pull the client from under another's running test: the
    # workers take turns on a lock, and the first installs. npm writes its hidden lock file last, so a folder left
    # by an install that was killed half-way is installed again.
    with open(JS_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JS_DIR / "node_modules" / ".package-lock.json").is_file():
            out = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=600
            )
            assert out.returncode == 0, f"npm ci failed:\n{out.stdout}\n{out.stderr}"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 18, f"Node.js {version} is too old (the client needs 18+)"
    return target


def test_js_client_roundtrip(compat_server: Server, node_modules: Path) -> None:
    env = {**os.environ, "OPENKVS_URL": compat_server.url, "OPENKVS_TOKEN": compat_server.token}
    out = subprocess.run(
        [need("node"), "roundtrip.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{compat_server.log()[-3000:]}"
    assert "ROUNDTRIP OK" in out.stdout


def test_js_client_request_queue(server: Server, node_modules: Path) -> None:
    """The request-queue calls a crawler makes (queues.mjs), on both backends."""
    env = {**os.environ, "OPENKVS_URL": server.url, "OPENKVS_TOKEN": server.token}
    out = subprocess.run([need("node"), "queues.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{server.log()[-3000:]}"
    assert "QUEUES OK" in out.stdout
