"""The ZIP download's safe mode, ``?safeNames=1`` (issue 11, item 13): keys that can't be file names everywhere
(256 bytes, equal but for case, Windows device names, a final dot) get names that unzip, bsdtar and Python's
zipfile all extract on Linux, listed in a manifest entry; the size is exact up front, ranges and the ETag work."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from openkvs.zipnames import MANIFEST_NAME

from . import assert_error, new_store

IN_CI = bool(__import__("os").environ.get("CI"))

RECORDS = {
    "L" * 256: b"long " * 30_000,  # 256 bytes of name; big enough to be read from the blob, not inline
    "x" * 252 + ".png": b"png",
    "OUTPUT": b"upper",
    "output": b"lower",
    "Output": b"title",
    "Readme": b"r1",
    "README": b"r2",
    "CON": b"con",
    "nul.txt": b"nul",
    "lpt1": b"lpt",
    "a.": b"dot",
    "...": b"dots",
    "img-1.jpg": b"plain",
}


@pytest.fixture(scope="module")
def filled(shared_server):
    with shared_server.client() as c:
        store = new_store(c)
        for key, body in RECORDS.items():
            r = c.put(f"/v2/key-value-stores/{store['id']}/records/{key}", content=body,
                      headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, (key, r.text)
    return shared_server, store


def _get(server, store, **params):
    with server.client() as c:
        return c.get(f"/v2/key-value-stores/{store['id']}/records", params=params)


def test_the_default_archive_names_entries_exactly_by_key(filled):
    server, store = filled
    r = _get(server, store)
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == sorted(RECORDS)


def test_safe_names_extract_everywhere_and_map_back_through_the_manifest(filled, tmp_path: Path):
    server, store = filled
    r = _get(server, store, safeNames="1")
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[-1] == MANIFEST_NAME
    renamed = json.loads(archive.read(MANIFEST_NAME))["renamed"]
    entry_of = {key: renamed.get(key, key) for key in RECORDS}
    assert sorted(names[:-1]) == sorted(entry_of.values())
    for key, body in RECORDS.items():
        assert archive.read(entry_of[key]) == body
    # what made extraction fail or lose files is gone
    assert all(len(n.encode()) <= 200 for n in names)
    assert len({n.lower() for n in names}) == len(names)
    assert not {"CON", "nul.txt", "lpt1", "a.", "..."} & set(names)
    assert entry_of["output"] == "output" and entry_of["img-1.jpg"] == "img-1.jpg"  # kept where safe
    assert entry_of["x" * 252 + ".png"].endswith(".png")  # the extension survives shortening

    path = tmp_path / "safe.zip"
    path.write_bytes(r.content)
    expected = {**{entry_of[k]: b for k, b in RECORDS.items()}, MANIFEST_NAME: archive.read(MANIFEST_NAME)}
    extracted = {}
    for tool, cmd in (
        ("unzip", ["unzip", "-t", str(path)]),
        ("bsdtar", ["bsdtar", "-tf", str(path)]),
        ("unzip", ["unzip", "-q", str(path), "-d", str(tmp_path / "unzip")]),
        ("bsdtar", ["bsdtar", "-xf", str(path), "-C", str(tmp_path / "bsdtar")]),
    ):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is missing in CI")
            continue
        (tmp_path / "bsdtar").mkdir(exist_ok=True)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)
        if "-t" not in cmd and "-tf" not in cmd:
            extracted[cmd[0]] = {p.name: p.read_bytes() for p in Path(cmd[-1]).iterdir()}
    archive.extractall(tmp_path / "python")
    extracted["python"] = {p.name: p.read_bytes() for p in (tmp_path / "python").iterdir()}
    for tool, files in extracted.items():
        assert files == expected, tool


def test_safe_mode_has_its_own_etag_and_answers_ranges_and_head(filled):
    server, store = filled
    plain, safe = _get(server, store), _get(server, store, safeNames="true")
    etag = safe.headers["etag"]
    assert etag != plain.headers["etag"] and _get(server, store, safeNames="1").headers["etag"] == etag
    body = safe.content
    with server.client() as c:
        url = f"/v2/key-value-stores/{store['id']}/records"
        head = c.head(url, params={"safeNames": "1"})
        assert head.headers["content-length"] == str(len(body)) and head.headers["etag"] == etag
        for start in (0, 1, 100, len(body) // 2, len(body) - 300, len(body) - 1):
            r = c.get(url, params={"safeNames": "1"}, headers={"Range": f"bytes={start}-", "If-Range": etag})
            assert r.status_code == 206 and r.content == body[start:], start
        r = c.get(url, params={"safeNames": "1"}, headers={"Range": "bytes=10-20", "If-Range": plain.headers["etag"]})
        assert r.status_code == 200 and r.content == body  # the default archive's ETag does not resume this one
        assert_error(c.get(url, params={"safeNames": "maybe"}), 400, "invalid-input")


def test_safe_mode_of_a_store_without_odd_keys_only_adds_an_empty_manifest(shared_server):
    with shared_server.client() as c:
        store = new_store(c)
        assert c.put(f"/v2/key-value-stores/{store['id']}/records/a", content=b"1").status_code == 201
        r = c.get(f"/v2/key-value-stores/{store['id']}/records", params={"safeNames": "1"})
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.namelist() == ["a", MANIFEST_NAME]
    assert json.loads(archive.read(MANIFEST_NAME))["renamed"] == {}
