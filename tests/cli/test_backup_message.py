"""`openkvs backup DEST` names DEST in what it prints: the folder it checked was DEST.partial, renamed to DEST when
verified, and a user told DEST.partial would look for a folder that is not there."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_serve_port import openkvs


def test_backup_names_the_folder_it_made(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    assert openkvs("migrate", "--data-dir", str(data)).returncode == 0
    out = openkvs("backup", str(dest), "--data-dir", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "backed up and verified" in out.stdout and f"{dest}/" in out.stdout
    assert ".partial" not in out.stdout and not (tmp_path / "backup.partial").exists()
    assert (dest / "openkvs.sqlite3").is_file()
