"""PostgreSQL's look-ups by ID hold the record they read too (lookups.StoreVersions, tables.RECORD_VERSION): the
next look-up of that key sends the version of the record row and gets its columns and bytes only when the row
changed. Whatever another node does to the record (an overwrite of the same size, a new type, a delete, a write
by plain SQL) shows in this node's very next look-up, alone or in a burst; a caller who may not read gets no
record, held or not."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import two_pg_nodes
from .test_contract import new_store, put
from .test_pg_get_versions import look

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def _bytes(node: Any, user_id: str, store_id: str, burst: int) -> tuple[bytes | None, str | None]:
    found = await look(node, user_id, store_id, burst=burst)
    record = found.record
    return (node.held_bytes(record), record.content_type) if record is not None else (None, None)


@pytest.mark.parametrize("burst", [1, 6])
async def test_a_record_changed_on_another_node_shows_in_the_next_look_up(burst: int) -> None:
    async with two_pg_nodes() as (a, b, _):
        alice, store = await new_store(a, "s")
        bob = await a.create_user("bob")
        await put(a, store.id, "k", b"one")
        held = [await look(a, alice.id, store.id, burst=burst) for _ in range(3)]
        assert held[2].record is held[1].record  # held and sent: the same record
        assert a.held_bytes(held[2].record) == b"one"
        await put(b, store.id, "k", b"two")  # the same size and type
        assert await _bytes(a, alice.id, store.id, burst) == (b"two", "application/octet-stream")
        await put(b, store.id, "k", b"two", content_type="text/plain")
        assert await _bytes(a, alice.id, store.id, burst) == (b"two", "text/plain")
        async with b._p().acquire() as conn:  # any writer: the row's version is PostgreSQL's, not ours
            await conn.execute("UPDATE records SET content_type = 'image/png' WHERE store_id = $1", store.id)
        assert await _bytes(a, alice.id, store.id, burst) == (b"two", "image/png")
        # bob may not read the store: no record for him, though this node holds one for the key
        found = await look(a, bob.id, store.id, burst=burst)
        assert (found.record_read, found.record) == (False, None)
        assert await b.delete_record(store.id, "k")
        found = await look(a, alice.id, store.id, burst=burst)
        assert (found.record_read, found.record) == (True, None)
        await put(b, store.id, "k", b"three")
        assert await _bytes(a, alice.id, store.id, burst) == (b"three", "application/octet-stream")


async def test_records_held_and_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record with more than RECORD_BYTES of bytes is read each time (memory stays bounded); one held longer
    than HELD_SECONDS is read again (its version is a 32-bit xid, which comes round)."""
    from openkvs.storage.postgres import lookups

    big = bytes(range(256)) * 17  # 4,352 bytes
    async with two_pg_nodes() as (a, _, _):
        alice, store = await new_store(a, "s")
        await put(a, store.id, "big", big)
        first, again = [(await look(a, alice.id, store.id, key="big")).record for _ in range(2)]
        assert again is not first and a.held_bytes(again) == big
        await put(a, store.id, "k", b"small")
        first, again = [(await look(a, alice.id, store.id)).record for _ in range(2)]
        assert again is first
        monkeypatch.setattr(lookups, "HELD_SECONDS", -1.0)
        again = (await look(a, alice.id, store.id)).record
        assert again is not first and again == first and a.held_bytes(again) == b"small"
