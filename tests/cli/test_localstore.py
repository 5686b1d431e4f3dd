"""openkvs import / export: a store Crawlee wrote with its FileSystemStorageClient goes in and comes out as the
same files, byte for byte, content types included."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.clirun import openkvs_here

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


def crawlee_records(storage: Path, name: str) -> dict[str, tuple[Any, str]]:
    """What Crawlee's own FileSystemStorageClient reads from a storage folder: key -> (value, content type)."""
    from crawlee.configuration import Configuration
    from crawlee.storage_clients import FileSystemStorageClient

    async def read() -> dict[str, tuple[Any, str]]:
        client = await FileSystemStorageClient().create_kvs_client(
            name=name, configuration=Configuration(storage_dir=str(storage))
        )
        out = {}
        async for meta in client.iterate_keys():
            record = await client.get_value(key=meta.key)
            assert record is not None, meta.key
            out[meta.key] = (record.value, record.content_type)
        return out

    return asyncio.run(read())


def test_crawlee_reads_an_export_of_records_put_through_the_api(shared_server: Any, tmp_path: Path) -> None:
    """The export is Crawlee's own layout (crawlee 1.x: value files named by the percent-encoded key, no extension,
    beside KEY.__metadata__.json): Crawlee finds every record with its bytes and content type. (A value file named
    OUTPUT.json, as the Apify CLI's INPUT.json, is one Crawlee 1.x does not find: it looks for OUTPUT.)"""
    pytest.importorskip("crawlee")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    records = {
        "OUTPUT": (b'{"title": "h\xc3\xa9llo"}', "application/json; charset=utf-8", {"title": "héllo"}),
        "notes.txt": (b"plain text", "text/plain; charset=utf-8", "plain text"),
        "page(1)'s": (b"<p>hi</p>", "text/html; charset=utf-8", "<p>hi</p>"),
        "shot": (png, "image/png", png),
    }
    with shared_server.client() as c:
        assert c.post("/v2/key-value-stores", params={"name": "for-crawlee"}).status_code in (200, 201)
        for key, (body, ctype, _) in records.items():
            r = c.put(f"/v2/key-value-stores/~for-crawlee/records/{quote(key, safe='')}", content=body,
                      headers={"Content-Type": ctype})
            assert r.status_code in (200, 201), r.text
    run(shared_server, "export", "~for-crawlee", str(tmp_path / "storage"))
    got = crawlee_records(tmp_path / "storage", "for-crawlee")
    assert got == {key: (value, ctype) for key, (_, ctype, value) in records.items()}


def test_import_reads_what_older_exports_and_the_apify_cli_wrote(shared_server: Any, tmp_path: Path) -> None:
    """Older layouts still import: a value file with an extension beside its metadata (``contentType`` spelled as
    in crawlee 0.x), and a file with no metadata at all (the Apify CLI's INPUT.json), typed by its extension."""
    folder = tmp_path / "storage" / "key_value_stores" / "older"
    folder.mkdir(parents=True)
    (folder / "OUTPUT.json").write_text('{"a": 1}')
    (folder / "OUTPUT.__metadata__.json").write_text('{"key": "OUTPUT", "contentType": "application/json"}')
    (folder / "INPUT.json").write_text('{"b": 2}')
    run(shared_server, "import", str(tmp_path / "storage"))
    with shared_server.client() as c:
        keys = [i["key"] for i in c.get("/v2/key-value-stores/~older/keys").json()["data"]["items"]]
        assert keys == ["INPUT", "OUTPUT"]
        for key, body in (("INPUT", {"b": 2}), ("OUTPUT", {"a": 1})):
            r = c.get(f"/v2/key-value-stores/~older/records/{key}")
            assert r.headers["content-type"].startswith("application/json") and r.json() == body


def import_offline(folder: Path) -> Any:
    """``openkvs import FOLDER`` against an address nothing answers: what it says before sending anything."""
    return openkvs_here("import", str(folder), "--url", "http://127.0.0.1:1", "--token", "t",
                        unset=("OPENKVS_", "APIFY_"), keep=())


def test_import_names_the_files_of_a_folder_that_are_in_no_store(tmp_path: Path) -> None:
    """A folder that is no Crawlee layout is read as a folder of stores' folders: the files beside those folders are
    in no store, and are named, with what import reads, instead of being left out while the folders are imported
    (it said "bad/sub -> ~sub: uploaded 1 file" and exited 0). Checked before anything is sent: no server."""
    bad = tmp_path / "bad"
    (bad / "sub").mkdir(parents=True)
    for name in ("has space.txt", "sub!ok.txt", "sub/ok.txt"):
        (bad / name).write_text("x")
    out = import_offline(bad)
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(
        f"Error: {bad}: files in no store's folder (nothing was imported):\n  has space.txt\n  sub!ok.txt\n"
        "import reads Crawlee's storage folder"
    ), out.stderr
    assert "'openkvs upload DIR STORE'" in out.stderr
    assert out.stdout == ""


def test_import_names_a_folder_inside_a_stores_folder(tmp_path: Path) -> None:
    """A store's records are the files in its folder: a folder there is named rather than left out."""
    store = tmp_path / "storage" / "key_value_stores" / "crawl"
    (store / "deeper").mkdir(parents=True)
    (store / "INPUT.json").write_text("{}")
    (store / "deeper" / "page.html").write_text("<p>")
    out = import_offline(tmp_path / "storage")
    assert out.returncode == 1, out.stdout
    assert out.stderr == (
        f"Error: {store}: records that can't be read:\n  {store / 'deeper'}: a folder (a store's records are the "
        "files directly in its folder)\n"
    )


def test_import_names_a_file_whose_key_no_record_can_have_before_sending(tmp_path: Path) -> None:
    """Checked with the rest before anything is sent, as upload checks its keys (the server refused the record after
    the store was made and the others sent)."""
    store = tmp_path / "storage" / "key_value_stores" / "crawl"
    store.mkdir(parents=True)
    (store / "INPUT.json").write_text("{}")
    (store / "has space.txt").write_text("x")
    out = import_offline(tmp_path / "storage")
    assert out.returncode == 1, out.stdout
    assert out.stderr == (
        f"Error: {store}: records that can't be read:\n  has space.txt: the key 'has space' is not one a record can "
        "have (at most 256 letters, digits and !_.'()-)\n"
    )


def test_export_of_a_store_is_not_mixed_with_files_already_there(shared_server: Any, tmp_path: Path) -> None:
    """As a dataset's and a queue's export: a store's folder that holds files already is refused, not written into
    (a stale record left there was imported back as the store's); a folder left by an interrupted export is
    replaced; only the metadata there is no file of a record."""
    with shared_server.client() as c:
        assert c.post("/v2/key-value-stores", params={"name": "mixed"}).status_code in (200, 201)
        assert c.put("/v2/key-value-stores/~mixed/records/now", content=b"now").status_code == 201
    out = tmp_path / "out"
    folder = out / "key_value_stores" / "mixed"
    folder.mkdir(parents=True)
    (folder / "stale").write_bytes(b"from before")
    refused = run(shared_server, "export", "~mixed", str(out), "-q", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr == f"Error: {folder} holds files already: remove it, or export into another folder\n"
    assert sorted(p.name for p in folder.iterdir()) == ["stale"]

    (folder / "stale").unlink()
    (folder / "__metadata__.json").write_text("{}")
    (out / "key_value_stores" / "mixed~partial").mkdir()
    (out / "key_value_stores" / "mixed~partial" / "left").write_bytes(b"by an interrupted export")
    done = run(shared_server, "export", "~mixed", str(out), "-q")
    assert done.stdout.startswith(f"{folder}: 1 record"), done.stdout
    assert sorted(p.name for p in (out / "key_value_stores").iterdir()) == ["mixed"]
    assert sorted(p.name for p in folder.iterdir()) == ["__metadata__.json", "now", "now.__metadata__.json"]
    assert json.loads((folder / "__metadata__.json").read_text())["name"] == "mixed"


def test_the_default_store_s_export_keeps_the_queue_orders_beside_it(tmp_path: Path) -> None:
    """localfiles.new_folder and put_in_place with the queue orders kept (what ``export`` of a store named default
    does): the orders exported before stay, unless the store has a record of the same key (the export run last
    wins, as a queue's export written after the store's replaces it); a link of that name is refused, not moved."""
    from openkvs.client.http import ClientError
    from openkvs.client.localfiles import new_folder, put_in_place, queue_order

    kvs = tmp_path / "key_value_stores"
    final = kvs / "default"
    final.mkdir(parents=True)
    for name, text in (("__metadata__.json", "{}"), ("__RQ_STATE_a", "queue a"), ("__RQ_STATE_a.__metadata__.json",
                       "meta a"), ("__RQ_STATE_b", "queue b"), ("__RQ_STATE_b.__metadata__.json", "meta b")):
        (final / name).write_text(text)
    with pytest.raises(ClientError, match="holds files already"):
        new_folder(kvs, "default")  # (no keep: as any other store's folder)
    partial, got = new_folder(kvs, "default", queue_order)
    assert got == final
    for name, text in (("INPUT", "in"), ("__RQ_STATE_b", "the store's b"), ("__RQ_STATE_b.__metadata__.json", "its")):
        (partial / name).write_text(text)
    put_in_place(partial, final, queue_order)
    assert {p.name: p.read_text() for p in final.iterdir()} == {
        "INPUT": "in", "__RQ_STATE_a": "queue a", "__RQ_STATE_a.__metadata__.json": "meta a",
        "__RQ_STATE_b": "the store's b", "__RQ_STATE_b.__metadata__.json": "its"}
    assert sorted(p.name for p in kvs.iterdir()) == ["default"]
    (final / "INPUT").unlink()
    (final / "__RQ_STATE_c").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ClientError, match="holds files already"):
        new_folder(kvs, "default", queue_order)
