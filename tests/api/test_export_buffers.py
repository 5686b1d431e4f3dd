"""A json or jsonl export of unchanged items goes out as storage read it: SQLite's packed rows and PostgreSQL's COPY
data reach the socket as a list of buffers (``ItemSnapshot.joined(buffers=True)``, the server's ``BUFFERS``
extension, openkvs/cycle.py), not joined into one object first. What a client gets is the same whichever way: over
the server's socket (buffers), through an ASGI server without the extension (joined; here httpx's ASGI transport),
compressed. And the body-bytes metric counts what was sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_datasets import items_url, new_dataset
from tests.conftest import make_server

# ~4 MB of jsonl: several pieces (about 1 MiB each), each of several packed rows
ITEMS = [{"i": i, "pad": "p" * (700 + i % 300)} for i in range(4000)]


def jsonl(items: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items)


def body_bytes(url: str) -> float:
    """The server's count of response body bytes sent for the dataset items route."""
    text = httpx.get(url + "/metrics", timeout=60).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "openkvs_http_response_body_bytes_total" and s.labels.get("route", "").endswith("/items")
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_exports_sent_as_buffers_arrive_whole(tmp_path: Path, backend: str) -> None:
    s = make_server(tmp_path, backend, "--rate-limits", "off", "--metrics", "public", in_process=True)
    try:
        auth = {"Authorization": f"Bearer {s.token}"}
        with s.client() as c, httpx.Client(base_url=s.url, headers=auth, timeout=120) as sock:
            did = new_dataset(c)["id"]
            for k in range(0, len(ITEMS), 1000):  # pushes of their own: a piece spans rows of several pushes
                assert c.post(items_url(did), json=ITEMS[k : k + 1000]).status_code == 201
            # (offset, limit, desc): the items a client expects, cut inside packed rows at both ends
            for params, items in [
                ({}, ITEMS),
                ({"desc": "1"}, ITEMS[::-1]),
                ({"offset": "777", "limit": "2222"}, ITEMS[777:2999]),
                ({"offset": "5", "limit": "3001", "desc": "true"}, ITEMS[::-1][5:3006]),
            ]:
                want = jsonl(items)
                through_socket = sock.get(items_url(did), params={**params, "format": "jsonl"})
                assert through_socket.status_code == 200
                assert through_socket.content == want, params
                assert c.get(items_url(did), params={**params, "format": "jsonl"}).content == want, params  # (ASGI)
                assert json.loads(sock.get(items_url(did), params={**params, "format": "json"}).content) == items
            zipped = sock.get(items_url(did), params={"format": "jsonl"}, headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip" and zipped.content == jsonl(ITEMS)
            before = body_bytes(s.url)
            plain = sock.get(items_url(did), params={"format": "jsonl"}, headers={"Accept-Encoding": "identity"})
            assert plain.content == jsonl(ITEMS)
            assert body_bytes(s.url) - before == len(plain.content)
    finally:
        s.stop()


def test_a_piece_of_buffers_is_sent_in_runs_of_at_most_a_send_piece() -> None:
    """Each send is at most SEND_PIECE bytes, a piece of buffers too (a csv piece's lines may be many MiB: a
    client reading steadily must not need to take more than that within the send timeout)."""
    from openkvs.api.download import SEND_PIECE, _pieces

    big = bytes(range(256)) * (2 * SEND_PIECE // 256 + 3)  # over two sends alone
    buffers: list[bytes | memoryview] = [b"a" * 10, big, b"", memoryview(b"xyz" * 1000)[1:], b"b" * (SEND_PIECE - 5)]
    runs = _pieces(buffers)  # type: ignore[arg-type]
    assert all(isinstance(run, list) and 0 < sum(map(len, run)) <= SEND_PIECE for run in runs)
    assert b"".join(bytes(b) for run in runs for b in run) == b"".join(bytes(b) for b in buffers)  # type: ignore[union-attr]
    assert len(runs) == -(-sum(map(len, buffers)) // SEND_PIECE)  # full runs but the last
    assert _pieces([b"x"]) == [[b"x"]]
