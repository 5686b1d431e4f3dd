"""SIGTERM during a 1 GiB ZIP download (issue 17, "What must hold"): the download completes byte-exact, new
connections are refused meanwhile, and the process then exits. A real ``openkvs serve`` process; the archive goes
to disk and is checked from there, so the test's memory stays flat."""

from __future__ import annotations

import hashlib
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

pytestmark = [pytest.mark.slow, pytest.mark.server_process, pytest.mark.timeout(900)]  # 1 GiB up and down, on a loaded machine too

RECORDS = 16
BLOCK = 1024 * 1024
BLOCKS = 64  # 64 MiB a record, 1 GiB in all


def body(i: int) -> Iterator[bytes]:
    """Record i's bytes, made as they are sent: 64 different 1 MiB blocks (no two records alike)."""
    for b in range(BLOCKS):
        yield hashlib.sha256(f"{i}:{b}".encode()).digest() * (BLOCK // 32)


def digest(i: int) -> str:
    h = hashlib.sha256()
    for block in body(i):
        h.update(block)
    return h.hexdigest()


def refused(url: str) -> bool:
    try:
        httpx.get(url + "/health/live", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


def test_a_1_gib_download_finishes_after_sigterm(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--shutdown-timeout", "600")
    assert s.proc is not None
    auth = {"Authorization": f"Bearer {s.token}"}
    with httpx.Client(base_url=s.url, headers=auth, timeout=300) as c:
        store = c.post("/v2/key-value-stores", params={"name": "huge"}).json()["data"]["id"]
        for i in range(RECORDS):
            r = c.put(f"/v2/key-value-stores/{store}/records/r{i:02d}", content=body(i),
                      headers={"content-type": "application/octet-stream"})
            assert r.status_code == 201, r.text
    out = tmp_path / "huge.zip"
    with httpx.Client(headers=auth, timeout=300) as c, \
            c.stream("GET", f"{s.url}/v2/key-value-stores/{store}/records") as r, open(out, "wb") as f:
        assert r.status_code == 200
        size = int(r.headers["content-length"])
        assert size > RECORDS * BLOCKS * BLOCK
        chunks = r.iter_raw()
        f.write(next(chunks))
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not refused(s.url):  # the listening socket is closed at once
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.2)
        assert s.proc.poll() is None, "exited with the download under way"
        for chunk in chunks:
            f.write(chunk)
    assert out.stat().st_size == size
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == [f"r{i:02d}" for i in range(RECORDS)]
        for i, name in enumerate(z.namelist()):
            h = hashlib.sha256()
            with z.open(name) as entry:  # zipfile checks each entry's CRC-32 as it reads it
                while block := entry.read(BLOCK):
                    h.update(block)
            assert h.hexdigest() == digest(i), name
    s.proc.wait(120)  # and then it exits on its own
