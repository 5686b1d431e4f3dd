"""openkvs import / export of datasets in Crawlee's layout: what crawlee's own FileSystemStorageClient wrote goes
in with every item in order, comes out as files Crawlee reads back as the same items, and an import stopped midway
says how far it got and is finished by a run again without a duplicate."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openkvs.client import localdataset
from tests.tcpproxy import TcpProxy

from .helpers import run

pytest.importorskip("crawlee")


def _configuration(storage: Path) -> Any:
    from crawlee.configuration import Configuration

    return Configuration(storage_dir=str(storage), purge_on_start=False)


def crawlee_push(storage: Path, name: str | None, items: list[dict[str, Any]]) -> None:
    """``items`` pushed by Crawlee into its dataset ``name`` (None: the default one) under ``storage``."""
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import Dataset

    async def push() -> None:
        ds = await Dataset.open(name=name, storage_client=FileSystemStorageClient(),
                                configuration=_configuration(storage))
        for at in range(0, len(items), 7):  # as a crawler does: a few at a time
            await ds.push_data(items[at:at + 7])

    asyncio.run(push())


def crawlee_items(storage: Path, name: str | None) -> list[Any]:
    """What Crawlee reads from its dataset ``name`` under ``storage``."""
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import Dataset

    async def read() -> list[Any]:
        ds = await Dataset.open(name=name, storage_client=FileSystemStorageClient(),
                                configuration=_configuration(storage))
        return [item async for item in ds.iterate_items()]

    return asyncio.run(read())


def api_items(server: Any, dataset: str) -> list[Any]:
    with server.client() as c:
        r = c.get(f"/v2/datasets/{dataset}/items", params={"format": "json"})
        assert r.status_code == 200, r.text
        return list(r.json())


def _items(n: int, tag: str) -> list[dict[str, Any]]:
    return [{"n": i, "tag": tag, "title": f"héllo {i} \u2028 ✓", "nested": {"list": [i, None, 1.5, True]},
             "#hidden": "kept"} for i in range(n)]


def test_crawlee_datasets_round_trip_through_import_and_export(shared_server: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    storage = tmp_path / "storage"
    backend = shared_server.backend.replace("+", "-")
    default, named = _items(40, "default"), _items(5, "named")
    crawlee_push(storage, None, default)
    crawlee_push(storage, f"results-{backend}", named)
    # pushes of at most 1,500 bytes: many of them, each a few items, as a big dataset's go in 9 MiB pushes
    monkeypatch.setattr(localdataset, "PUSH_LIMIT", 1500)
    out = run(shared_server, "import", str(storage / "datasets"), "-q")
    assert "-> ~default: pushed 40 items" in out.stdout, out.stdout
    assert f"-> ~results-{backend}: pushed 5 items" in out.stdout, out.stdout
    assert api_items(shared_server, "~default") == default
    assert api_items(shared_server, f"~results-{backend}") == named

    again = run(shared_server, "import", str(storage / "datasets" / f"results-{backend}"), "-q")
    assert "all 5 items there already, nothing pushed" in again.stdout, again.stdout
    assert api_items(shared_server, f"~results-{backend}") == named

    run(shared_server, "export", "--dataset", f"~results-{backend}", str(tmp_path / "out"), "-q")
    assert crawlee_items(tmp_path / "out", f"results-{backend}") == named
    source = storage / "datasets" / f"results-{backend}"
    exported = tmp_path / "out" / "datasets" / f"results-{backend}"
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in source.iterdir())
    for p in source.glob("0*.json"):  # the items' files byte for byte as Crawlee wrote them
        assert (exported / p.name).read_bytes() == p.read_bytes(), p.name
    meta = json.loads((exported / "__metadata__.json").read_text())
    assert meta["name"] == f"results-{backend}" and meta["item_count"] == 5


def test_an_import_stopped_midway_says_how_far_and_a_run_again_adds_no_duplicate(
        sqlite_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 31 is one the server refuses (nested deeper than the 128 levels a body may have): the items before it
    are stored, the command says so and fails; the file fixed, the same command pushes the rest and only the rest."""
    storage = tmp_path / "storage"
    items = _items(60, "midway")
    crawlee_push(storage, "midway", items)
    folder = storage / "datasets" / "midway"
    deep: Any = "bottom"
    for _ in range(200):
        deep = [deep]
    (folder / "000000031.json").write_text(json.dumps({"deep": deep}))
    monkeypatch.setattr(localdataset, "PUSH_LIMIT", 1500)
    first = run(sqlite_server, "import", str(folder), "-q", check=False)
    assert first.returncode == 1, first.stdout
    stored = api_items(sqlite_server, "~midway")
    assert 0 < len(stored) < 31 and stored == items[:len(stored)]
    assert f"{len(stored)} of 60 items are in ~midway (run the same command again to push the rest)" in \
        first.stderr, first.stderr
    assert "not imported: " in first.stderr

    (folder / "000000031.json").write_text(json.dumps(items[30], indent=2, ensure_ascii=False))
    second = run(sqlite_server, "import", str(folder), "-q")
    assert f"pushed {60 - len(stored)} items" in second.stdout and f"after the {len(stored)}" in second.stdout
    assert api_items(sqlite_server, "~midway") == items


def test_the_progress_of_a_dataset_import_ends_at_its_total(sqlite_server: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes counted are those sent, a push's brackets and commas too, and the total is what will be sent: the
    last line says 100 %, in the first import and in one that resumes after the items an earlier one pushed (it
    said "86 B of 85 B  101%" for one item, a few bytes more for each push)."""
    storage = tmp_path / "storage"
    items = [{"n": i, "text": "x" * 40} for i in range(20)]
    crawlee_push(storage, "progress", items[:12])
    folder = storage / "datasets" / "progress"
    monkeypatch.setattr(localdataset, "PUSH_LIMIT", 200)  # pushes of 3 items: a few of them, under 1 KiB in all

    def final_line(out: Any) -> str:
        [line] = [line for line in out.stderr.splitlines() if line.startswith("progress  ")]
        return line

    def sent(out: Any, pushed: str) -> int:
        return int(out.stdout.split(f"pushed {pushed} (")[1].split(" bytes)")[0])

    first = run(sqlite_server, "import", str(folder))
    size = sent(first, "12 items")
    assert final_line(first).startswith(f"progress  {size} B of {size} B  100%  "), first.stderr
    crawlee_push(storage, "progress", items[12:])
    resumed = run(sqlite_server, "import", str(folder))
    assert "pushed 8 items" in resumed.stdout and "after the 12" in resumed.stdout, resumed.stdout
    size = sent(resumed, "8 items")
    assert final_line(resumed).startswith(f"progress  {size} B of {size} B  100%  "), resumed.stderr
    assert api_items(sqlite_server, "~progress") == items


def test_an_import_into_a_dataset_with_other_items_is_refused_unless_appended(sqlite_server: Any,
                                                                              tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    items = _items(3, "mine")
    crawlee_push(storage, "busy", items)
    with sqlite_server.client() as c:
        c.post("/v2/datasets", params={"name": "busy"}).raise_for_status()
        c.post("/v2/datasets/~busy/items", json=[{"other": 1}]).raise_for_status()
    refused = run(sqlite_server, "import", str(storage), "-q", check=False)
    assert refused.returncode == 1
    assert "~busy holds 1 item that are not the first of busy's 3: nothing was pushed" in refused.stderr, \
        refused.stderr
    assert api_items(sqlite_server, "~busy") == [{"other": 1}]
    run(sqlite_server, "import", str(storage), "-q", "--append")
    assert api_items(sqlite_server, "~busy") == [{"other": 1}, *items]


def test_an_export_streams_into_a_folder_of_its_own(sqlite_server: Any, tmp_path: Path) -> None:
    """A dataset pushed through the API comes out in order as Crawlee reads it; a folder that holds another
    dataset's items already is not mixed with them; a folder left by an interrupted export is replaced."""
    items = [{"i": i, "text": "x" * (i % 50), "s": "\u2028"} for i in range(2500)]
    with sqlite_server.client() as c:
        c.post("/v2/datasets", params={"name": "api-made"}).raise_for_status()
        for at in range(0, len(items), 500):
            c.post("/v2/datasets/~api-made/items", json=items[at:at + 500]).raise_for_status()
    out = tmp_path / "out"
    (out / "datasets" / "api-made~partial").mkdir(parents=True)
    (out / "datasets" / "api-made~partial" / "000000007.json").write_text("{}")
    done = run(sqlite_server, "export", "--dataset", "~api-made", str(out), "-q")
    assert done.stdout.strip() == f"{out / 'datasets' / 'api-made'}: 2500 items"
    assert crawlee_items(out, "api-made") == items
    assert sorted(p.name for p in (out / "datasets").iterdir()) == ["api-made"]

    again = run(sqlite_server, "export", "--dataset", "~api-made", str(out), "-q", check=False)
    assert again.returncode == 1 and "holds files already" in again.stderr, again.stderr
    shutil.rmtree(out / "datasets" / "api-made")


class LoseFirstPushAnswer(TcpProxy):
    """A TCP proxy to the server that passes everything but the answer to the first push (POST .../items): once
    the server answers it (the items stored), the connection is closed instead, as a network that fails then."""

    def __init__(self, port: int) -> None:
        self.lost = threading.Event()
        super().__init__("127.0.0.1", port)

    def relay(self, data: bytes, asking: bool, conn: dict[str, int]) -> tuple[bytes, bool]:
        if asking and data.startswith(b"POST /v2/datasets/") and b"/items" in data.split(b"\r\n")[0]:
            conn["pushing"] = 1
        if not asking and conn.get("pushing") and not self.lost.is_set():
            self.lost.set()
            return b"", False
        return data, True


def test_a_push_whose_answer_was_lost_is_not_sent_again(sqlite_server: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        no_backoff: list[float]) -> None:
    """The server stored the first push but its answer never came: the dataset's item count says it landed, so
    it is not pushed twice (a blind retry would have stored its items twice)."""
    storage = tmp_path / "storage"
    items = _items(30, "lost")
    crawlee_push(storage, "lost-answer", items)
    monkeypatch.setattr(localdataset, "PUSH_LIMIT", 1500)
    proxy = LoseFirstPushAnswer(int(sqlite_server.url.rsplit(":", 1)[1]))
    try:
        run(SimpleNamespace(url=proxy.url, token=sqlite_server.token), "import", str(storage), "-q")
    finally:
        proxy.down()
    assert proxy.lost.is_set() and no_backoff  # (the answer was lost, and the command waited to try again)
    assert api_items(sqlite_server, "~lost-answer") == items
