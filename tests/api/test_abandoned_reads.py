"""Clients that leave a download or an export right after its first byte, many times over: the server stops the
work (its read-ahead of the next batch is given up) and closes the read transaction's connection. A read still
running in a worker thread must end before its connection is closed: a close under a running SQLite statement
crashed the whole server (SIGSEGV in libsqlite3, seen with bench/datasets.py's first-byte probes)."""

from __future__ import annotations

import socket
import time

import pytest

from . import unique

FORMATS = ("jsonl", "json", "csv", "html", "xml")


def _first_byte_then_leave(host: str, port: int, path: str, token: str) -> bytes:
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            piece = sock.recv(4096)
            assert piece, f"the server closed the connection without an answer (gone?): {head!r}"
            head += piece
        return head.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_server_survives_many_clients_leaving_after_the_first_byte(tmp_path, start_server, backend) -> None:
    s = start_server(tmp_path, backend, "--rate-limits", "off")
    host, port = s.url.removeprefix("http://").split(":")
    with s.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("leave")}).json()["data"]["id"]
        item = {"title": "x" * 300, "price": 12.5, "tags": ["a", "b", "c"], "seller": {"name": "s", "id": 7}}
        for _ in range(20):  # 20,000 items: batches of 4,000, so a read-ahead is running when the client leaves
            assert c.post(f"/v2/datasets/{did}/items", json=[item] * 1000).status_code == 201
        sid = c.post("/v2/key-value-stores", params={"name": unique("leave")}).json()["data"]["id"]
        for i in range(300):
            assert c.put(f"/v2/key-value-stores/{sid}/records/k{i:04d}", content=b"r" * 5000).status_code == 201

        paths = [f"/v2/key-value-stores/{sid}/records"]
        for fmt in FORMATS:
            paths += [f"/v2/datasets/{did}/items?format={fmt}", f"/v2/datasets/{did}/items?format={fmt}&desc=1",
                      f"/v2/datasets/{did}/items?format={fmt}&offset=10000"]
        for _ in range(4):
            for path in paths:
                for _ in range(300):  # the download slots of the ones just left are freed once the server notices
                    status = _first_byte_then_leave(host, int(port), path, s.token)
                    if not status.endswith(b" 429 Too Many Requests"):
                        break
                    time.sleep(0.05)
                assert status.endswith(b" 200 OK"), (path, status)

        # still serving, whole answers (once the last abandoned ones have given their download slots back)
        for _ in range(300):
            r = c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl"})
            if r.status_code != 429:
                break
            time.sleep(0.05)
        assert r.status_code == 200 and len(r.content.splitlines()) == 20_000
    assert s.proc is None or s.proc.poll() is None, s.log()[-3000:]
    assert "Traceback" not in s.log()
