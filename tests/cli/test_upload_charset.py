"""The content type `openkvs upload` gives a text file: its charset named when the file starts as UTF-8, so that a
browser opening the record by its link shows the text as written instead of guessing windows-1252."""

from __future__ import annotations

from pathlib import Path

from openkvs.client.upload import content_type


def test_text_files_that_are_utf8_say_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes("first line, ünïcode\n".encode())
    (tmp_path / "page.html").write_bytes(b"<p>plain ascii</p>")
    (tmp_path / "old.txt").write_bytes("caf\u00e9".encode("latin-1"))  # not UTF-8: no charset claimed
    # a UTF-8 character cut by the end of the first 64 KiB looked at is still UTF-8
    (tmp_path / "long.csv").write_bytes(b"a" * 65535 + "é,1\n".encode())
    (tmp_path / "data.json").write_bytes(b'{"a": 1}')
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert content_type(tmp_path / "notes.txt") == "text/plain; charset=utf-8"
    assert content_type(tmp_path / "page.html") == "text/html; charset=utf-8"
    assert content_type(tmp_path / "old.txt") == "text/plain"
    assert content_type(tmp_path / "long.csv") == "text/csv; charset=utf-8"
    assert content_type(tmp_path / "data.json") == "application/json"  # JSON is UTF-8 by its definition
    assert content_type(tmp_path / "logo.png") == "image/png"
