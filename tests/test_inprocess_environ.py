"""An in-process server reads its own environment, never what an earlier test left in this process's: ``openkvs
serve`` run in process writes every setting into os.environ for its workers, and the suite once failed in one
order only (43 token-not-valid errors) because the next in-process server then served another PostgreSQL schema
than the one its users were created in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from openkvs import cli
from tests.api import new_store, rec_path
from tests.conftest import DATABASE_URL, make_server


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_server_after_serve_in_process_uses_its_own_storage(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What tests/test_config.py does: `serve` resolved in process, without starting uvicorn. Flags, not env=:
    # CliRunner puts back the variables it was given, not the ones the command wrote.
    other = ["--database-url", DATABASE_URL, "--database-schema", "t_not_this_servers"] if backend == "sqlite" else []
    with monkeypatch.context() as m:
        m.setattr(cli, "_run", lambda settings, work: None)
        m.setattr("openkvs.shutdown.run", lambda config: None)
        result = CliRunner().invoke(cli.main, ["serve", "--port", "9", *other])
    assert result.exit_code == 0, result.output
    assert "OPENKVS_DATABASE_SCHEMA" in os.environ  # serve hands its settings down through the environment

    server = make_server(tmp_path, backend, "--rate-limits", "off", in_process=True)
    try:
        with server.client() as c:
            store: dict[str, Any] = new_store(c)  # alice's token is valid: the same storage as `migrate` made
            assert c.put(rec_path(store["id"], "k"), content=b"v").status_code == 201
        assert store["id"] in server.cli("stores", "list")
    finally:
        server.stop()
