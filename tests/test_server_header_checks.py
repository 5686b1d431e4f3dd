"""uvicorn's checks of each response header (a name or value that would split the response is refused), as
openkvs/cycle.py's ``Cycle`` makes them: the lines of headers found clean are remembered, a bad one is still refused
every time it comes, after clean ones and after itself. Over a real socket, uvicorn with openkvs's protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openkvs import cycle
from tests.inprocess import serving

CLEAN = b"the same value on every response"
SPLIT = b"x\r\nset-cookie: evil=1"  # a value that would add a header of its own


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The header ``x-test``'s value by the path: /clean, /split (a CR LF), /ctl (a control byte), /name (a bad
    name); else the path."""
    headers = {
        "/clean": [(b"x-test", CLEAN)],
        "/split": [(b"x-test", SPLIT)],
        "/ctl": [(b"x-test", b"a\x01b")],
        "/name": [(b"x test", b"v")],
    }.get(scope["path"]) or [(b"x-test", scope["path"].encode())]  # /many/N: a value of its own
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2"), *headers]})
    await send({"type": "http.response.body", "body": b"ok"})


def served(paths: list[str]) -> list[bytes]:
    """What the server sends for a GET of each path, each on a connection of its own, until it closes."""

    async def run() -> list[bytes]:
        got = []
        async with serving(app) as address:
            for path in paths:
                reader, writer = await asyncio.open_connection(*address)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                got.append(await asyncio.wait_for(reader.read(), 30))
                writer.close()
        return got

    return asyncio.run(run())


def test_clean_headers_pass_and_are_remembered() -> None:
    for got in served(["/clean"] * 3):
        assert got.startswith(b"HTTP/1.1 200 ") and b"\r\nx-test: " + CLEAN + b"\r\n" in got, got
    # remembered: the next response's line is a look-up (BENCHMARKS.md: ~25k instructions a served GET less)
    assert cycle.remembered()[(b"x-test", CLEAN)] == b"x-test: " + CLEAN + b"\r\n"


@pytest.mark.parametrize("path", ["/split", "/ctl", "/name"])
def test_a_bad_header_is_refused_every_time(path: str) -> None:
    got = served(["/clean", path] * 3)  # after clean responses and after itself: never remembered as clean
    for clean, bad in zip(got[::2], got[1::2], strict=True):
        assert clean.startswith(b"HTTP/1.1 200 ")
        assert bad == b"", bad  # uvicorn refused the head: the connection closed, nothing of it sent
    assert not any(value == SPLIT or name == b"x test" for name, value in cycle.remembered())


def test_the_remembered_are_bounded() -> None:
    got = served([f"/many/{i}" for i in range(2 * cycle.LINES_KEPT)])  # a value per response (an ETag, say)
    assert all(r.startswith(b"HTTP/1.1 200 ") for r in got)
    held = cycle.remembered()  # two tables of LINES_KEPT each: the content-length lines apart from the others
    lengths = [pair for pair in held if pair[0] == b"content-length"]
    assert 0 < len(held) - len(lengths) <= cycle.LINES_KEPT and len(lengths) <= cycle.LINES_KEPT
