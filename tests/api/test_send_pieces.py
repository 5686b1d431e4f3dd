"""A streamed response (ZIP download, dataset export: api/download.py ``ArchiveResponse``) hands the server's send
pieces of at most SEND_PIECE bytes, whatever the size of the chunks it streams, and the pieces are the chunks'
bytes in order (views of a big chunk, not copies)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from openkvs.api.download import SEND_PIECE, ArchiveResponse

pytestmark = pytest.mark.anyio


async def test_big_chunks_go_out_in_pieces_of_at_most_send_piece() -> None:
    chunks = [b"a" * 10, bytes(range(256)) * (SEND_PIECE // 256 * 2 + 7), b"", b"z" * SEND_PIECE, b"tail"]

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": bytes(message["body"])}  # (a view is only valid while the chunk lives)
        sent.append(message)

    response = ArchiveResponse(200, {"content-type": "application/zip"}, stream(), AsyncExitStack(), 60.0, "s1")
    await response({"type": "http"}, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m["body"] for m in sent[1:]]
    assert b"".join(bodies) == b"".join(chunks)
    assert all(len(b) <= SEND_PIECE for b in bodies)
    assert [len(b) for b in bodies[1:4]] == [SEND_PIECE, SEND_PIECE, len(chunks[1]) - 2 * SEND_PIECE]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
