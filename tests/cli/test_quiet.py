"""``-q`` on the client's commands (download, upload, import, export): no progress and none of the lines on what was
done on the way (a store, dataset or queue created; a download begun anew), only the result on stdout and errors
on stderr. Without it those lines are shown."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from .helpers import run


def test_quiet_says_only_the_result(sqlite_server: Any, tmp_path: Path) -> None:
    name = "quiet-" + secrets.token_hex(3)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a")
    with sqlite_server.client() as c:
        assert c.post("/v2/datasets", params={"name": name}).status_code == 201
        assert c.post(f"/v2/datasets/~{name}/items", json=[{"a": 1}]).status_code == 201
        assert c.post("/v2/request-queues", params={"name": name}).status_code == 201
        assert c.post(f"/v2/request-queues/~{name}/requests",
                      json={"uniqueKey": "u", "url": "https://example.com/"}).status_code == 201
    run(sqlite_server, "export", "--dataset", f"~{name}", str(tmp_path / "ds"), "-q")
    run(sqlite_server, "export", "--queue", f"~{name}", str(tmp_path / "rq"), "-q")
    commands = {
        "store": ["upload", str(tmp_path / "files"), "~{}"],
        "dataset": ["import", str(tmp_path / "ds" / "datasets" / name), "--store", "~{}"],
        "request queue": ["import", str(tmp_path / "rq" / "request_queues" / name), "--store", "~{}"],
    }
    for what, command in commands.items():
        loud = run(sqlite_server, *[a.format(f"{name}-loud") for a in command])
        assert f"created {what} ~{name}-loud\n" in loud.stderr, loud.stderr
        quiet = run(sqlite_server, *[a.format(f"{name}-quiet") for a in command], "-q")
        assert quiet.stderr == "" and quiet.stdout, (what, quiet.stdout, quiet.stderr)

    part = tmp_path / "out.zip.part"  # a part file of no known archive: begun anew, and said so unless -q
    for quiet, said in ((False, "out.zip.part has no record of which archive it belongs to: downloading anew.\n"),
                        (True, "")):
        part.write_bytes(b"PK")
        out = run(sqlite_server, "download", f"~{name}-loud", "-o", str(tmp_path / "out.zip"), *(["-q"] * quiet))
        assert out.stdout.startswith(f"{tmp_path / 'out.zip'}: 1 record"), out
        assert out.stderr == "" if quiet else said in out.stderr, out  # (and a progress line)
        (tmp_path / "out.zip").unlink()


def test_quiet_still_shows_errors(sqlite_server: Any, tmp_path: Path) -> None:
    out = run(sqlite_server, "download", "~no-such-store-" + secrets.token_hex(3), "-o", str(tmp_path / "x.zip"), "-q",
              check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and len(out.stderr.splitlines()) == 1, out
