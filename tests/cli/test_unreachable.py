"""The client's commands pointed at an address where nothing listens (the wrong port in OPENKVS_URL, a server not
started yet): one line that names the address and how to give another, and no FILE.part "kept" that was never
begun. download's retries say they cannot connect there (they said "Connection lost", of a connection never made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import openkvs_here
from tests.conftest import free_port


@pytest.mark.parametrize("command", [["download", "~shots"], ["upload", ".", "~shots"], ["export", "~shots", "out"]])
def test_nothing_listening_is_one_line_naming_the_address(command: list[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          no_backoff: list[float]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("a")
    url = f"http://127.0.0.1:{free_port()}"
    out = openkvs_here(*command, "--url", url, "--token", "okvs_x")  # (not -q: it keeps the retries' lines quiet)
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and f": cannot connect to {url} (" in last, last
    assert last.endswith("; is the server running? (--url or OPENKVS_URL)"), last
    assert "is kept" not in out.stderr and not list(tmp_path.glob("*.part*"))
    retries = out.stderr.strip().splitlines()[:-1]
    assert all(line.startswith(f"Cannot connect to {url} (") and line.endswith("; trying again.") for line in retries)
    assert len(retries) == (2 if command[0] == "download" else 0), retries
    assert "lost" not in out.stderr.lower()
    assert len(no_backoff) == 2 and all(w > 0 for w in no_backoff), no_backoff  # two more tries, each after a wait
