"""openkvs import / export against hostile local storage and hostile keys: a storage folder from someone else (an
archive unpacked, an actor's output) whose links point outside it, whose metadata lie or whose files name one key
twice; keys whose files are the layout's own names. Nothing outside the folder is read or written, nothing is
silently lost or taken for another record: a clear message names what was refused."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from openkvs.client import http, localstore
from openkvs.client.progress import Progress

from .helpers import client_env, run


def _store(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "storage" / "key_value_stores" / name
    folder.mkdir(parents=True)
    return folder


def _keys(server: Any, store: str) -> list[str]:
    with server.client() as c:
        r = c.get(f"/v2/key-value-stores/~{store}/keys")
        return [i["key"] for i in r.json()["data"]["items"]] if r.status_code == 200 else []


@pytest.mark.parametrize("what", ["file", "metadata's value", "store folder"])
def test_import_follows_no_link_out_of_the_folder(shared_server: Any, tmp_path: Path, what: str) -> None:
    """A link to a secret (~/.ssh/id_rsa) inside a store's folder was read and uploaded as a record."""
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-" + what)
    name = f"links-{what.split()[0].strip(chr(39) + 's')}"
    if what == "store folder":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "id_rsa").symlink_to(secret)
        (tmp_path / "elsewhere" / "plain").write_text("plain")
        (tmp_path / "storage" / "key_value_stores").mkdir(parents=True)
        (tmp_path / "storage" / "key_value_stores" / name).symlink_to(tmp_path / "elsewhere")
    else:
        folder = _store(tmp_path, name)
        (folder / "ok").write_text("fine")
        if what == "file":
            (folder / "id_rsa").symlink_to(secret)
        else:
            (folder / "id_rsa").symlink_to(secret)
            (folder / "id_rsa.__metadata__.json").write_text('{"key": "id_rsa", "content_type": "text/plain"}')
    out = run(shared_server, "import", str(tmp_path / "storage"), check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "symbolic links, not followed" in out.stderr, out.stderr
    assert (name if what == "store folder" else "id_rsa") in out.stderr, out.stderr
    assert _keys(shared_server, name) == []  # refused before anything was sent


def test_import_refuses_metadata_that_lie(shared_server: Any, tmp_path: Path) -> None:
    """A key that is not a string, and two files that give the same key (one silently won)."""
    folder = _store(tmp_path, "liars")
    (folder / "a").write_text("one")
    (folder / "a.__metadata__.json").write_text('{"key": 7, "content_type": "text/plain"}')
    (folder / "b").write_text("two")
    (folder / "b.__metadata__.json").write_text('{"key": "same", "content_type": "text/plain"}')
    (folder / "c").write_text("three")
    (folder / "c.__metadata__.json").write_text('{"key": "same", "content_type": "text/plain"}')
    out = run(shared_server, "import", str(tmp_path / "storage"), check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "a.__metadata__.json: the key must be a string" in out.stderr, out.stderr
    assert "two files give the key 'same'" in out.stderr, out.stderr
    assert _keys(shared_server, "liars") == []


def test_export_of_keys_named_like_the_layouts_files(shared_server: Any, tmp_path: Path) -> None:
    """A key whose file would be a metadata file ("__metadata__.json", "x.__metadata__.json" beside "x") is named
    as not exported, rather than overwriting the metadata (and, imported back, naming another record); "x.tmp" is
    its own record, not export's temporary file of "x"."""
    store = "layoutkeys"
    records = {"x": b"the x", "x.tmp": b"not a temporary file", "x.tmp.tmp": b"nor this", "y": b"why"}
    clashing = {"__metadata__.json": b'{"id": "forged"}', "x.__metadata__.json": b'{"key": "y"}'}
    with shared_server.client() as c:
        assert c.post("/v2/key-value-stores", params={"name": store}).status_code in (200, 201)
        for key, body in {**records, **clashing}.items():
            assert c.put(f"/v2/key-value-stores/~{store}/records/{key}", content=body,
                         headers={"content-type": "text/plain"}).status_code == 201
    out = run(shared_server, "export", f"~{store}", str(tmp_path / "out"), "-q", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    for key in clashing:
        assert f"{key}: its file would be a metadata file of Crawlee's layout" in out.stderr, out.stderr
    folder = tmp_path / "out" / "key_value_stores" / store
    assert json.loads((folder / "__metadata__.json").read_text())["name"] == store
    for key, body in records.items():
        assert (folder / key).read_bytes() == body
        assert json.loads((folder / f"{key}.__metadata__.json").read_text())["key"] == key
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["__metadata__.json", *records, *(f"{k}.__metadata__.json" for k in records)])
    run(shared_server, "import", str(folder), "--store", f"~{store}-back")
    assert _keys(shared_server, f"{store}-back") == sorted(records)


@pytest.mark.parametrize("name", ["..", "../../escaped", "a/b", ""])
def test_export_takes_no_folder_name_from_the_server_that_leaves_dir(tmp_path: Path, name: str) -> None:
    """The store's name comes from the server and names the folder written: a name that isn't one (a server
    answering otherwise than openkvs would) is refused before anything is written."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/key-value-stores/s":
            return httpx.Response(200, json={"data": {"id": name or "..", "name": name}})
        return httpx.Response(200, json={"data": {"items": [], "isTruncated": False}})

    root = tmp_path / "a" / "b"
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://127.0.0.1:9")
    with pytest.raises(http.ClientError, match="not a store name"):
        localstore.export(client, "s", root, progress=lambda *a: Progress(*a, quiet=True))
    assert not os.path.exists(root) and sorted(p.name for p in tmp_path.rglob("*")) == []


def _import_limited(server: Any, storage: Path) -> subprocess.CompletedProcess[str]:
    """``openkvs import STORAGE`` in a process of at most 2 GiB of address space: a read without a bound ends in a
    MemoryError rather than in filling this machine's memory; one that waits for ever is stopped at 120 s."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "openkvs", "import", str(storage), "-q"], env=client_env(server),
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)


def test_import_refuses_a_linked_store_metadata_before_reading_it(shared_server: Any, tmp_path: Path) -> None:
    """``__metadata__.json -> /dev/zero`` was read (for the store's name) before the links were looked for."""
    folder = _store(tmp_path, "zeros")
    (folder / "ok").write_text("fine")
    (folder / "__metadata__.json").symlink_to("/dev/zero")
    out = _import_limited(shared_server, tmp_path / "storage")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "symbolic links, not followed" in out.stderr and "__metadata__.json" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert _keys(shared_server, "zeros") == []


def test_import_does_not_wait_on_a_fifo_for_the_store_metadata(shared_server: Any, tmp_path: Path) -> None:
    """A FIFO named __metadata__.json held the import for ever; it is no metadata: the store takes its folder's
    name, as with metadata that can't be read."""
    folder = _store(tmp_path, "fifo-meta")
    (folder / "ok").write_text("fine")
    os.mkfifo(folder / "__metadata__.json")
    out = _import_limited(shared_server, tmp_path / "storage")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _keys(shared_server, "fifo-meta") == ["ok"]


def test_import_refuses_a_record_metadata_file_past_its_bound(shared_server: Any, tmp_path: Path) -> None:
    """A record's metadata file is read up to 1 MiB (a sparse 4 GB one was read whole: MemoryError)."""
    folder = _store(tmp_path, "fat-meta")
    (folder / "a").write_text("fine")
    (folder / "a.__metadata__.json").write_text('{"key": "a", "content_type": "text/plain"}' + " " * (2 << 20))
    (folder / "b").write_text("fine too")
    with open(folder / "b.__metadata__.json", "wb") as f:  # sparse: 4 GiB of nothing on the disk
        f.truncate(4 << 30)
    out = _import_limited(shared_server, tmp_path / "storage")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{folder / 'a.__metadata__.json'}: 2,097,194 bytes, over the 1,048,576 such a file may have" in out.stderr
    assert f"{folder / 'b.__metadata__.json'}: 4,294,967,296 bytes, over the 1,048,576" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert _keys(shared_server, "fat-meta") == []


def _hostile_server(keys: list[str]) -> httpx.Client:
    """A server (not openkvs) whose store ``s1`` lists ``keys`` and answers every record with b"bytes"."""
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/key-value-stores/s":
            return httpx.Response(200, json={"data": {"id": "abc", "name": "s1"}})
        if path == "/v2/key-value-stores/s/keys":
            return httpx.Response(200, json={"data": {"items": [{"key": k, "size": 5} for k in keys],
                                                      "isTruncated": False}})
        return httpx.Response(200, stream=httpx.ByteStream(b"bytes"), headers={"content-type": "text/plain"})

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://127.0.0.1:9")


def test_export_refuses_keys_no_record_can_have_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """"." named the store's folder itself (its bytes were written beside it, to s1~PID-TID, and left there), ".."
    its parent, "x~1" was exported and then silently skipped by import: each is a failed record, shown escaped."""
    hostile = [".", "..", "", "x~1", "a/b"]
    with _hostile_server(["ok", *hostile]) as client:
        folder, summary = localstore.export(client, "s", tmp_path / "out", progress=lambda *a: Progress(*a, quiet=True))
    assert summary.uploaded == 1
    assert sorted(summary.failed) == sorted(
        f"{k!r}: not a record key (1-256 letters, digits and !_.'()-, not . or ..): the server sent a key no record "
        "can have" for k in hostile)
    assert sorted(p.name for p in folder.iterdir()) == ["__metadata__.json", "ok", "ok.__metadata__.json"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.parent != folder) == [
        "out", "out/key_value_stores", "out/key_value_stores/s1"]


def test_a_failed_write_of_a_record_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's file can't take the fetched bytes' place (the rename fails: a full disk, a folder in the way):
    the record fails, and its temporary file is removed, not left beside the others."""
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "ok":
            raise IsADirectoryError(21, "Is a directory", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with _hostile_server(["ok"]) as client:
        folder, summary = localstore.export(client, "s", tmp_path / "out", progress=lambda *a: Progress(*a, quiet=True))
    assert summary.uploaded == 0 and len(summary.failed) == 1 and summary.failed[0].startswith("ok: ")
    assert sorted(p.name for p in folder.iterdir()) == ["__metadata__.json"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["s1"]


@pytest.mark.parametrize(("kind", "link"), [
    ("store", "key_value_stores/links"), ("store", "key_value_stores"),
    ("queue", "key_value_stores/default"), ("queue", "key_value_stores"), ("queue", "request_queues"),
    ("dataset", "datasets"),
])
def test_export_follows_no_folder_link_under_dir(shared_server: Any, tmp_path: Path, kind: str, link: str) -> None:
    """``ln -s /some/dir out/key_value_stores/s1``: the export wrote its files into /some/dir."""
    with shared_server.client() as c:
        if kind == "store":
            assert c.post("/v2/key-value-stores", params={"name": "links"}).status_code in (200, 201)
            assert c.put("/v2/key-value-stores/~links/records/ok", content=b"fine").status_code == 201
        elif kind == "queue":
            assert c.post("/v2/request-queues", params={"name": "links"}).status_code in (200, 201)
            assert c.post("/v2/request-queues/~links/requests",
                          json={"uniqueKey": "u", "url": "https://example.com/"}).status_code in (200, 201)
        else:
            assert c.post("/v2/datasets", params={"name": "links"}).status_code in (200, 201)
            assert c.post("/v2/datasets/~links/items", json=[{"a": 1}]).status_code == 201
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(elsewhere)
    flag = [] if kind == "store" else [f"--{kind}"]
    failed = run(shared_server, "export", *flag, "~links", str(out), "-q", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{out / link} is a symbolic link: an export writes only inside its folder" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert list(elsewhere.iterdir()) == []


def test_export_into_a_dir_that_is_a_link_writes_there(shared_server: Any, tmp_path: Path) -> None:
    """DIR itself is the user's choice: a link to the folder meant is followed."""
    with shared_server.client() as c:
        assert c.post("/v2/key-value-stores", params={"name": "dirlink"}).status_code in (200, 201)
        assert c.put("/v2/key-value-stores/~dirlink/records/ok", content=b"fine").status_code == 201
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    run(shared_server, "export", "~dirlink", str(tmp_path / "out"), "-q")
    assert (tmp_path / "real" / "key_value_stores" / "dirlink" / "ok").read_bytes() == b"fine"
