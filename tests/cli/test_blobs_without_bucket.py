"""``openkvs blobs fsck`` and ``openkvs blobs migrate`` on a database without --blob-store: a one-line error that
says what is missing, on either command, and nothing done."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import Ran, openkvs_here


def openkvs_cli(*args: str) -> Ran:
    return openkvs_here(*args, unset=("OPENKVS_", "AWS_"), keep=())


@pytest.mark.parametrize("command", [["fsck"], ["migrate", "--to", "bucket"]])
def test_blobs_commands_need_a_bucket(tmp_path: Path, command: list[str]) -> None:
    assert openkvs_cli("migrate", "--data-dir", str(tmp_path)).returncode == 0
    out = openkvs_cli("blobs", *command, "--data-dir", str(tmp_path))
    assert out.returncode == 1, out
    assert out.stderr.strip() == "Error: this needs --blob-store (or OPENKVS_BLOB_STORE)"
