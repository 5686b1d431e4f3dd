"""Headers sent twice: the record GET reads the token, Range and If-None-Match from the raw headers (api/common.py
``raw_header``), and the first of repeated ones counts, as Starlette's ``headers.get`` gives it for every other
request. Sent over a real socket, the way a hostile client would."""

from __future__ import annotations

import socket

from . import unique


def _get(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{lines}\r\n".encode("latin-1"))
        data = b""
        while piece := sock.recv(65536):
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_the_first_of_repeated_headers_counts(tmp_path, start_server) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    host, port = s.url.removeprefix("http://").split(":")
    with s.client() as c:
        sid = c.post("/v2/key-value-stores", params={"name": unique("twice")}).json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{sid}/records/k", content=b"0123456789").status_code == 201
    path = f"/v2/key-value-stores/{sid}/records/k"
    good, bad = f"Bearer {s.token}", "Bearer okvs_not-a-token"

    assert _get(host, int(port), path, [("Authorization", good), ("Authorization", bad)]) == (200, b"0123456789")
    assert _get(host, int(port), path, [("Authorization", bad), ("Authorization", good)])[0] == 401
    # a name in any case is the same header
    assert _get(host, int(port), path, [("AUTHORIZATION", good), ("authorization", bad)]) == (200, b"0123456789")
    ranged = [("Authorization", good), ("Range", "bytes=0-1"), ("Range", "bytes=5-9")]
    assert _get(host, int(port), path, ranged) == (206, b"01")
