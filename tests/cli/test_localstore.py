"""openkvs import / export: a store Crawlee wrote with its FileSystemStorageClient goes in and comes out as the
same files, byte for byte, content types included."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import run


def crawlee_store(storage: Path) -> None:
    pytest.importorskip("crawlee")
    from crawlee.configuration import Configuration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import KeyValueStore

    async def write() -> None:
        kvs = await KeyValueStore.open(
            name="crawl", storage_client=FileSystemStorageClient(),
            configuration=Configuration(storage_dir=str(storage)),
        )
        await kvs.set_value("OUTPUT", {"title": "héllo", "n": [1, 2]})
        await kvs.set_value("screenshot", b"\x89PNG\r\n" + bytes(range(256)) * 40, content_type="image/png")
        await kvs.set_value("notes.txt", "plain text")
        await kvs.set_value("page(1)", "<p>hi</p>", content_type="text/html; charset=utf-8")
        await kvs.set_value("nothing", None)

    asyncio.run(write())


def test_crawlee_storage_round_trips_through_import_and_export(shared_server: Any, tmp_path: Path) -> None:
    crawlee_store(tmp_path / "storage")
    source = tmp_path / "storage" / "key_value_stores" / "crawl"
    imported = run(shared_server, "import", str(tmp_path / "storage"))
    assert "-> ~crawl: uploaded 5 files" in imported.stdout
    with shared_server.client() as c:
        r = c.get("/v2/key-value-stores/~crawl/records/screenshot")
        assert r.headers["content-type"] == "image/png"
    run(shared_server, "export", "~crawl", str(tmp_path / "out"))
    exported = tmp_path / "out" / "key_value_stores" / "crawl"
    records = sorted(p.name for p in source.iterdir() if p.name != "__metadata__.json")
    assert records == sorted(p.name for p in exported.iterdir() if p.name != "__metadata__.json")
    for name in records:  # values and their metadata files ({"key", "content_type", "size"}), byte for byte
        assert (exported / name).read_bytes() == (source / name).read_bytes(), name
    meta = json.loads((exported / "__metadata__.json").read_text())
    assert meta["name"] == "crawl" and set(meta) == {"id", "name", "accessed_at", "created_at", "modified_at"}
    again = run(shared_server, "import", str(tmp_path / "out"))  # back again: nothing to send
    assert "uploaded 0 files (0 bytes), 5 identical skipped" in again.stdout
