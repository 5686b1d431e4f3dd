"""A chunked request body's trailer fields (RFC 9112 7.1.2) as openkvs/server.py's protocol treats them: read, counted
against the head's limit, and dropped, never added to the request's headers, which the app may read again after the
body (RFC 9110 6.5.1: a trailer field is not merged into the header section unless its definition says so; a
recipient may discard them). Over a real socket, uvicorn with openkvs's protocol and an app that answers with the
header fields it sees once the body is read. The limit itself: tests/api/test_connection_limits.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.inprocess import serving


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The body and the request's header fields, read after the whole body, as JSON."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps({"body": body.decode(), "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer.encode()})


def served(raw: bytes) -> bytes:
    """What the server sends for ``raw``, written at once, until it closes the connection."""

    async def run() -> bytes:
        async with serving(app) as address:
            reader, writer = await asyncio.open_connection(*address)
            writer.write(raw)
            got = await asyncio.wait_for(reader.read(), 30)
            writer.close()
        return got

    return asyncio.run(run())


def test_trailer_fields_do_not_reach_the_app() -> None:
    """A trailer the head announced, and ones it did not, among them names the head has not (Content-Type) and
    has (Host): the app sees the head's fields only, and the body."""
    got = served(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n"
        b"Connection: close\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 1234\r\nContent-Type: text/x-trailer\r\nHost: y\r\n\r\n"
    )
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), got
    answer = json.loads(body)
    assert answer["body"] == "abcde"
    assert answer["headers"] == [
        ["host", "x"], ["transfer-encoding", "chunked"], ["trailer", "X-Checksum"], ["connection", "close"],
    ]


def test_the_next_request_on_the_connection_has_its_own_headers() -> None:
    """After a body with trailers, a pipelined request: its header fields are its own, none of the trailers."""
    got = served(
        b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb"
    )
    answers = [json.loads(part.partition(b"\r\n\r\n")[2] or b"null") for part in got.split(b"HTTP/1.1 200 ")[1:]]
    assert [a["body"] for a in answers] == ["a", "b"], got
    assert answers[0]["headers"] == [["host", "x"], ["transfer-encoding", "chunked"]]
    assert answers[1]["headers"] == [["host", "x"], ["content-length", "1"], ["connection", "close"]]
