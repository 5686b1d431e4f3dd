"""SIGTERM (issue 17): an open ZIP download finishes byte-exact while new connections are refused; the process
exits within --shutdown-timeout; a second SIGTERM exits at once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

RECORDS = 4
SIZE = 8 * 1024 * 1024  # 32 MiB in all: more than the socket buffers hold, so the download is under way for a while


def _with_download(
    start_server: Callable[..., Server], tmp_path: Path, *flags: str
) -> tuple[Server, str, dict[str, bytes]]:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", *flags)
    bodies = {f"r{i}": os.urandom(SIZE) for i in range(RECORDS)}
    with s.client() as c:
        store_id = c.post("/v2/key-value-stores", params={"name": "big"}).json()["data"]["id"]
        for key, body in bodies.items():
            assert c.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=body).status_code == 201
    return s, f"{s.url}/v2/key-value-stores/{store_id}/records", bodies


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/health/live", timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> float:
    t0 = time.monotonic()
    proc.wait(seconds)
    return time.monotonic() - t0


@pytest.mark.slow
def test_open_download_completes_and_new_connections_are_refused(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    s, url, bodies = _with_download(start_server, tmp_path, "--shutdown-timeout", "120")
    assert s.proc is not None
    received = bytearray()
    with httpx.Client(headers={"Authorization": f"Bearer {s.token}"}, timeout=60) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes(64 * 1024)
        received += next(chunks)
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while not _refused(s.url):  # the listening socket is closed at once
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.2)
        assert s.proc.poll() is None  # still sending the download
        for chunk in chunks:
            received += chunk
    with zipfile.ZipFile(io.BytesIO(bytes(received))) as z:  # byte-exact: every entry's CRC and bytes
        assert {n: z.read(n) for n in z.namelist()} == bodies
    assert _wait_exit(s.proc, 30) < 30


@pytest.mark.slow
def test_the_deadline_ends_a_stalled_download(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s, url, _ = _with_download(start_server, tmp_path, "--shutdown-timeout", "2")
    assert s.proc is not None
    with httpx.Client(headers={"Authorization": f"Bearer {s.token}"}, timeout=60) as c, c.stream("GET", url) as r:
        chunks = r.iter_bytes(64 * 1024)  # kept: a dropped iterator closes the response
        next(chunks)  # and then read no more
        s.proc.send_signal(signal.SIGTERM)
        took = _wait_exit(s.proc, 30)
    assert took < 15  # 2 s of grace, then exit (generous: a loaded machine)


@pytest.mark.slow
def test_a_second_sigterm_exits_at_once(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s, url, _ = _with_download(start_server, tmp_path, "--shutdown-timeout", "300")
    assert s.proc is not None
    with httpx.Client(headers={"Authorization": f"Bearer {s.token}"}, timeout=60) as c, c.stream("GET", url) as r:
        chunks = r.iter_bytes(64 * 1024)
        next(chunks)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert s.proc.poll() is None  # waiting for the download (for up to 300 s)
        s.proc.send_signal(signal.SIGTERM)
        took = _wait_exit(s.proc, 30)
    assert took < 15
