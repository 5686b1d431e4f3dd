"""The record count after the command line's bulk paths: ``openkvs import`` of a Crawlee storage (run twice: the
second skips every file) and ``openkvs upload`` of a folder over a store that already holds some of its keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .helpers import run
from .test_localstore import crawlee_store


def record_count(server: Any, store: str) -> int:
    with server.client() as c:
        return int(c.get(f"/v2/key-value-stores/{store}").json()["data"]["stats"]["recordCount"])


def test_import_and_upload_keep_the_count(shared_server: Any, tmp_path: Path) -> None:
    crawlee_store(tmp_path / "storage")
    run(shared_server, "import", str(tmp_path / "storage"))
    assert record_count(shared_server, "~crawl") == 5
    again = run(shared_server, "import", str(tmp_path / "storage"))
    assert "5 identical skipped" in again.stdout
    assert record_count(shared_server, "~crawl") == 5

    folder = tmp_path / "shots"
    (folder / "img").mkdir(parents=True)
    for i in range(6):
        (folder / "img" / f"{i}.png").write_bytes(os.urandom(1000 + 70_000 * (i % 2)))
    with shared_server.client() as c:  # two of the six keys are there already, with other bytes
        c.post("/v2/key-value-stores", params={"name": "shots"}).raise_for_status()
        for key in ("p-img!0.png", "p-img!1.png", "other"):
            c.put(f"/v2/key-value-stores/~shots/records/{key}", content=b"old").raise_for_status()
    run(shared_server, "upload", str(folder), "~shots", "--prefix", "p-", "--jobs", "4")
    assert record_count(shared_server, "~shots") == 7  # six files, and "other"
    with shared_server.client() as c:
        keys = c.get("/v2/key-value-stores/~shots/keys").json()["data"]["items"]
    assert len(keys) == 7
