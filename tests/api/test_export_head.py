"""HEAD of a dataset export (``HEAD /v2/datasets/{id}/items``) answers the GET's headers without its body (RFC 9110
9.3.2): Transfer-Encoding, Content-Type, Content-Encoding, Content-Disposition and X-Apify-Pagination-* alike, for
every format, so that a client checking an export before it downloads it sees what the GET would send."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TLS

from . import unique

ITEMS = [{"url": f"https://example.com/{i}", "n": i, "tags": ["a"]} for i in range(50)]
VARYING = {"date", "x-request-id"}  # (the moment and the request, not the resource)


@pytest.fixture(scope="module")
def ds(sqlite_server):
    with sqlite_server.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("head")}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{did}/items", json=ITEMS).status_code == 201
    return sqlite_server, did


def answer(s, method: str, did: str, params: dict[str, str], accept: str) -> tuple[list[tuple[str, str]], bytes]:
    headers = {"Authorization": f"Bearer {s.token}", "Accept-Encoding": accept}
    with httpx.Client(base_url=s.url, timeout=60, verify=TLS) as c:
        r = c.send(c.build_request(method, f"/v2/datasets/{did}/items", params=params, headers=headers), stream=True)
        body = b"".join(r.iter_raw())
    return sorted((k.lower(), v) for k, v in r.headers.multi_items() if k.lower() not in VARYING), body


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "xlsx", "xml", "html", "rss"])
@pytest.mark.parametrize("accept", ["identity", "gzip"])
def test_head_of_an_export_has_the_get_s_headers(ds, fmt: str, accept: str) -> None:
    s, did = ds
    params = {"format": fmt, "offset": "3", "limit": "20"}
    got, body = answer(s, "GET", did, params, accept)
    head, nothing = answer(s, "HEAD", did, params, accept)
    assert body and nothing == b""
    assert head == got
    assert ("transfer-encoding", "chunked") in head and "content-length" not in dict(head)
    assert ("x-apify-pagination-count", "20") in head


def test_a_head_leaves_the_connection_ready_for_the_next_request(ds) -> None:
    """Its Transfer-Encoding says how the GET's body would come: no chunk (not even the last, empty one) follows a
    HEAD's head, or the next response on the kept-alive connection would be read from it."""
    import socket
    from urllib.parse import urlsplit

    s, did = ds
    url = urlsplit(s.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    if url.scheme == "https":
        sock = TLS.wrap_socket(sock, server_hostname=url.hostname)  # (TLS: the suite's context, not a file)
    with sock:
        head = (f"HEAD /v2/datasets/{did}/items?format=jsonl&limit=1 HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {s.token}\r\n\r\n")
        get = head.replace("HEAD", "GET", 1).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
        sock.sendall((head + get).encode())
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    first, rest = got.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]  # the GET's answer right after the HEAD's head
    assert rest.endswith(b"\r\n0\r\n\r\n") and b'"n":0' in rest
