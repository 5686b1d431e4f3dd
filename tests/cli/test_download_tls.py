"""openkvs download over TLS (a server behind a TLS proxy, as README's production set-up has it): the body is
received straight from the TLS socket (client/receive.py's fast path reads an ``ssl.SSLSocket``), the archive is
the same bytes as the server's, and a connection cut midway (a TLS stream ended without its close_notify) is resumed."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openkvs.client.download import download, part_paths
from openkvs.client.http import endpoint
from openkvs.client.receive import direct_socket

from .test_download_direct import archive, quiet


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "server.crt", d / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )
    return crt, key


class TLSProxy:
    """TLS on 127.0.0.1 in front of a plain HTTP port, in a thread with its own event loop (asyncio's TLS transport
    reads and writes one SSL object from one thread). The first ``cuts`` connections end after ``cut_at`` bytes
    of the answer, without TLS's close_notify: what a dropped connection looks like."""

    def __init__(self, target: int, cert: tuple[Path, Path], *, cut_at: int = 0, cuts: int = 0) -> None:
        self.target, self.cut_at, self.cuts = target, cut_at, cuts
        self.connections = 0
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(*map(str, cert))
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(30)
        self.url = f"https://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx))
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        cut = self.cut_at if self.connections <= self.cuts else 0
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, cut: int) -> None:
            sent = 0
            try:
                while data := await r.read(65536):
                    if cut and sent + len(data) >= cut:
                        w.write(data[: cut - sent])
                        await w.drain()
                        w.transport.abort()  # no close_notify: the client sees the TLS stream end early
                        return
                    w.write(data)
                    await w.drain()
                    sent += len(data)
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(down_r, up_w, 0), pipe(up_r, down_w, cut), return_exceptions=True)

    async def _shutdown(self) -> None:
        self.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def store(sqlite_server: Any) -> str:
    with sqlite_server.client() as c:
        c.post("/v2/key-value-stores?name=dl-tls")
        for i in range(5):
            body = os.urandom(400_000 + 11 * i)
            assert c.put(f"/v2/key-value-stores/~dl-tls/records/part-{i}", content=body).status_code == 201
    return "~dl-tls"


@pytest.fixture
def trusted(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))  # httpx trusts this CA file instead of certifi's
    yield


def port_of(server: Any) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_the_body_is_received_from_the_tls_socket(sqlite_server: Any, store: str, cert: Any, trusted: None) -> None:
    proxy = TLSProxy(port_of(sqlite_server), cert)
    try:
        with endpoint(proxy.url, sqlite_server.token).client() as api:
            with api.stream("GET", f"/v2/key-value-stores/{store}/records") as r:
                assert r.status_code == 200
                assert isinstance(direct_socket(r), ssl.SSLSocket)
    finally:
        proxy.close()


@pytest.mark.parametrize("direct, threaded", [(True, True), (True, False), (False, False)])
def test_the_archive_over_tls_is_the_servers(
    sqlite_server: Any, store: str, cert: Any, trusted: None, tmp_path: Path, direct: bool, threaded: bool
) -> None:
    proxy = TLSProxy(port_of(sqlite_server), cert)
    out = tmp_path / "a.zip"
    try:
        with endpoint(proxy.url, sqlite_server.token).client() as api:
            done = download(api, store, out, progress=quiet, say=lambda m: None, direct=direct, threaded=threaded)
    finally:
        proxy.close()
    assert out.read_bytes() == archive(sqlite_server, store)
    assert done.entries == 5
    assert not any(p.exists() for p in part_paths(out))


@pytest.mark.parametrize("direct", [True, False])
def test_a_tls_connection_cut_midway_is_resumed(
    sqlite_server: Any, store: str, cert: Any, trusted: None, tmp_path: Path, direct: bool
) -> None:
    proxy = TLSProxy(port_of(sqlite_server), cert, cut_at=900_001, cuts=2)
    out = tmp_path / "cut.zip"
    said: list[str] = []
    try:
        with endpoint(proxy.url, sqlite_server.token).client() as api:
            download(api, store, out, progress=quiet, say=said.append, sleep=lambda s: None, retries=3, direct=direct)
    finally:
        proxy.close()
    assert out.read_bytes() == archive(sqlite_server, store)
    assert sum("Connection lost" in m for m in said) == 2, said
    assert proxy.connections == 3
