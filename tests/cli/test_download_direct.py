"""openkvs download's fast path (openkvs/client/receive.py): the body received straight from the socket and checked
in a second thread writes the same file as the ordinary path through httpx; a connection cut midway is resumed; a
byte changed on the wire fails the check, whichever path and however it is checked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from openkvs.client.download import download, part_paths
from openkvs.client.http import ClientError, endpoint
from openkvs.client.progress import Progress
from tests.tcpproxy import TcpProxy

PATHS = [(True, True), (True, False), (False, True), (False, False)]  # (direct, threaded)


class Tamper(TcpProxy):
    """A TCP proxy on 127.0.0.1 to ``port``: answers pass unchanged, except that the first ``cuts`` connections
    are closed after ``cut_at`` bytes of the answer, and that the byte at ``flip_at`` of every answer is changed."""

    def __init__(self, port: int, *, cut_at: int = 0, cuts: int = 0, flip_at: int = -1) -> None:
        self.cut_at, self.cuts, self.flip_at = cut_at, cuts, flip_at
        super().__init__("127.0.0.1", port)

    def relay(self, data: bytes, asking: bool, conn: dict[str, int]) -> tuple[bytes, bool]:
        if asking:
            return data, True
        sent = conn.get("sent", 0)
        if self.cut_at and conn["number"] <= self.cuts and sent + len(data) >= self.cut_at:
            return data[: self.cut_at - sent], False
        if sent <= self.flip_at < sent + len(data):
            changed = bytearray(data)
            changed[self.flip_at - sent] ^= 0x5A
            data = bytes(changed)
        conn["sent"] = sent + len(data)
        return data, True


@pytest.fixture(scope="module")
def store(sqlite_server: Any) -> str:
    with sqlite_server.client() as c:
        c.post("/v2/key-value-stores?name=dl-direct")
        for i in range(6):
            body = os.urandom(300_000 + 7 * i)
            assert c.put(f"/v2/key-value-stores/~dl-direct/records/part-{i}", content=body).status_code == 201
    return "~dl-direct"


def archive(server: Any, store: str) -> bytes:
    with server.client() as c:
        r = c.get(f"/v2/key-value-stores/{store}/records")
        assert r.status_code == 200
        return r.content


def quiet(*_: Any) -> Progress:
    return Progress("t", None, quiet=True)


@pytest.mark.parametrize("direct, threaded", PATHS)
def test_every_path_writes_the_archive_and_checks_it(
    sqlite_server: Any, store: str, tmp_path: Path, direct: bool, threaded: bool
) -> None:
    out = tmp_path / "a.zip"
    with endpoint(sqlite_server.url, sqlite_server.token).client() as api:
        done = download(api, store, out, progress=quiet, say=lambda m: None, direct=direct, threaded=threaded)
    assert out.read_bytes() == archive(sqlite_server, store)
    assert done.entries == 6 and done.size == out.stat().st_size
    assert not any(p.exists() for p in part_paths(out))


@pytest.mark.parametrize("direct, threaded", PATHS)
def test_a_connection_cut_midway_is_resumed_in_the_same_run(
    sqlite_server: Any, store: str, tmp_path: Path, direct: bool, threaded: bool
) -> None:
    proxy = Tamper(int(sqlite_server.url.rsplit(":", 1)[1]), cut_at=700_001, cuts=2)
    out = tmp_path / "cut.zip"
    said: list[str] = []
    try:
        with endpoint(proxy.url, sqlite_server.token).client() as api:
            download(api, store, out, progress=quiet, say=said.append, sleep=lambda s: None, retries=3,
                     direct=direct, threaded=threaded)
    finally:
        proxy.down()
    assert out.read_bytes() == archive(sqlite_server, store)
    assert sum("Connection lost" in m for m in said) == 2, said
    assert proxy.connections == 3


@pytest.mark.parametrize("direct, threaded", PATHS)
def test_a_byte_changed_on_the_wire_fails_the_check(
    sqlite_server: Any, store: str, tmp_path: Path, direct: bool, threaded: bool
) -> None:
    proxy = Tamper(int(sqlite_server.url.rsplit(":", 1)[1]), flip_at=1_234_567)  # inside an entry's data
    out = tmp_path / "flip.zip"
    try:
        with endpoint(proxy.url, sqlite_server.token).client() as api, pytest.raises(ClientError, match="failed its check"):
            download(api, store, out, progress=quiet, say=lambda m: None, direct=direct, threaded=threaded)
    finally:
        proxy.down()
    assert not out.exists() and not any(p.exists() for p in part_paths(out))

