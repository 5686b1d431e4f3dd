"""openkvs upload: one record per file with its content type, keys by the documented rule (or a refusal listing
the files), identical records skipped, 429/5xx retried."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from openkvs.client.http import request

from .helpers import run


def tree(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    (root / "img" / "home.png").write_bytes(os.urandom(70_000))
    (root / "data.json").write_text('{"a": 1}')
    (root / "notes.txt").write_text("hello")
    (root / "blob.bin.gz").write_bytes(b"\x1f\x8b" + os.urandom(100))
    for i in range(30):
        (root / f"page-{i:02d}.html").write_text(f"<p>{i}</p>")


def test_upload_stores_every_file_then_skips_the_identical_ones(shared_server: Any, tmp_path: Path) -> None:
    tree(tmp_path / "site")
    first = run(shared_server, "upload", str(tmp_path / "site"), "~up-site", "--prefix", "v1-", "--jobs", "8")
    assert "uploaded 34 files" in first.stdout and "0 identical skipped" in first.stdout
    with shared_server.client() as c:
        keys = c.get("/v2/key-value-stores/~up-site/keys").json()["data"]["items"]
        assert len(keys) == 34 and {"v1-img!home.png", "v1-data.json", "v1-page-07.html"} <= {k["key"] for k in keys}
        png = c.get("/v2/key-value-stores/~up-site/records/v1-img!home.png")
        assert png.content == (tmp_path / "site" / "img" / "home.png").read_bytes()
        assert png.headers["content-type"] == "image/png"
        types = {k: c.head(f"/v2/key-value-stores/~up-site/records/v1-{k}").headers["content-type"]
                 for k in ("data.json", "notes.txt", "page-01.html", "blob.bin.gz")}
        assert types["data.json"].startswith("application/json") and types["notes.txt"].startswith("text/plain")
        assert types["page-01.html"].startswith("text/html") and types["blob.bin.gz"] == "application/octet-stream"
    (tmp_path / "site" / "notes.txt").write_text("hellO")  # same size, other bytes: the CRC tells
    again = run(shared_server, "upload", str(tmp_path / "site"), "~up-site", "--prefix", "v1-")
    assert "uploaded 1 file (5 bytes), 33 identical skipped" in again.stdout
    with shared_server.client() as c:
        assert c.get("/v2/key-value-stores/~up-site/records/v1-notes.txt").content == b"hellO"


def test_files_that_cant_be_keys_are_listed_and_nothing_is_sent(shared_server: Any, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("x")
    (root / "with space.txt").write_text("x")
    (root / "sub" / "é.txt").write_text("x")
    (root / "sub!x").write_text("x")  # the same key as sub/x
    (root / "sub" / "x").write_text("x")
    out = run(shared_server, "upload", str(root), "~up-bad", check=False)
    assert out.returncode == 1
    for name in ("with space.txt", "sub/é.txt", "sub/x"):
        assert name in out.stderr, out.stderr
    assert "ok.txt" not in out.stderr and "nothing was uploaded" in out.stderr
    with shared_server.client() as c:
        assert c.get("/v2/key-value-stores/~up-bad").status_code == 404  # not even created


def test_429_and_5xx_are_retried_with_retry_after() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(503), httpx.Response(201)])
    bodies: list[bytes] = []

    def handler(r: httpx.Request) -> httpx.Response:
        bodies.append(r.read())
        return next(answers)

    waits: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x") as c:
        r = request(c, "PUT", "/v2/key-value-stores/~s/records/k", "upload", content=lambda: b"abc", sleep=waits.append)
    assert r.status_code == 201 and bodies == [b"abc"] * 3 and waits[0] == 2.0 and len(waits) == 2


def test_a_400_is_not_retried_and_says_why() -> None:
    calls = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        return httpx.Response(400, json={"error": {"type": "invalid-record-key", "message": "bad key"}})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x") as c:
        try:
            request(c, "PUT", "/x", "upload of a", sleep=lambda s: None)
        except Exception as exc:
            assert "HTTP 400 invalid-record-key: bad key" in str(exc)
    assert len(calls) == 1


def test_symbolic_links_are_left_out_and_named(shared_server: Any, tmp_path: Path) -> None:
    """A link in DIR to a file outside it (/etc/passwd, ~/.ssh/id_rsa) was uploaded as the file's bytes; a link to a
    folder is not entered either (one to DIR's parent loops). Both are named, and the summary counts them."""
    root = tmp_path / "linked"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("x")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the server")
    (root / "secret.txt").symlink_to(secret)
    (root / "sub" / "inside.txt").symlink_to(root / "ok.txt")  # a link even to a file in DIR: not followed
    (root / "up").symlink_to(tmp_path)  # a folder (and a loop: tmp_path holds linked/)
    out = run(shared_server, "upload", str(root), "~up-linked")
    assert "uploaded 1 file (1 byte), 0 identical skipped, 3 links or special files left out" in out.stdout
    for name in ("secret.txt", "sub/inside.txt", "up"):
        assert f"left out: {name} (a symbolic link)" in out.stderr, out.stderr
    with shared_server.client() as c:
        keys = c.get("/v2/key-value-stores/~up-linked/keys").json()["data"]["items"]
        assert [k["key"] for k in keys] == ["ok.txt"]
