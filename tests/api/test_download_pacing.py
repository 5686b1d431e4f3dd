"""How a streamed download (a ZIP or an export) is handed to the server: in pieces small enough that the send
timeout cuts only clients that read nothing, and with its download slot given back before the client can see the
response end, so that a client's next download, sent the moment the last one ended, is never refused because the
finished one still counts."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest

from openkvs.api.download import SEND_PIECE, ArchiveResponse
from openkvs.api.download_slots import DownloadSlots

from . import unique


async def _chunks(pieces: list[bytes]) -> Any:
    for p in pieces:
        yield p


def test_each_send_is_at_most_a_piece_and_the_slot_is_free_before_the_end() -> None:
    slots = DownloadSlots(total=4, per_caller=1)
    big = bytes(range(256)) * (SEND_PIECE * 5 // 256) + b"tail"  # an export's batch of 5 MiB and a bit
    pieces = [b"head", big, b"x" * 10, big]
    sent: list[dict[str, Any]] = []
    open_at_end: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message["more_body"]:
            open_at_end.append(slots._open)
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def main() -> None:
        stack = AsyncExitStack()
        stack.enter_context(slots.take("user:a"))
        response = ArchiveResponse(200, {}, _chunks(pieces), stack, 60.0, "store")
        await response({"type": "http", "method": "GET"}, receive, send)

    asyncio.run(main())
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert b"".join(bodies) == b"".join(pieces)
    assert max(len(b) for b in bodies) <= SEND_PIECE
    assert len(bodies) > 10  # the 5 MiB batches went out in pieces
    assert open_at_end == [0]  # the slot was let go before the message that ends the response


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_back_to_back_downloads_with_one_slot_per_user_are_never_refused(tmp_path, start_server, backend) -> None:
    s = start_server(tmp_path, backend, "--rate-limits", "off", "--max-downloads-per-user", "1", in_process=True)
    with s.client() as c:
        sid = c.post("/v2/key-value-stores", params={"name": unique("pace")}).json()["data"]["id"]
        for i in range(20):
            assert c.put(f"/v2/key-value-stores/{sid}/records/k{i}", content=b"v" * 3000).status_code == 201
        did = c.post("/v2/datasets", params={"name": unique("pace")}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{did}/items", json=[{"i": i, "s": "x" * 200} for i in range(300)]).status_code == 201
        statuses = []
        for _ in range(30):  # one keep-alive connection: each request leaves the moment the last one has ended
            statuses.append(c.get(f"/v2/key-value-stores/{sid}/records").status_code)
            statuses.append(c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl"}).status_code)
            statuses.append(c.get(f"/v2/datasets/{did}/items", params={"format": "csv"}).status_code)
        assert statuses == [200] * 90, statuses
