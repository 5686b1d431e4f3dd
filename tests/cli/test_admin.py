"""The administration commands a user reaches for: --version, --help, users/tokens/stores list, stores delete,
~NAME wherever a store is named, and no database created by accident."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import openkvs
from openkvs import auth
from tests.clirun import Ran, openkvs_here

# `openkvs serve` as a process: it makes the user admin on its first start, which these listings show. The
# commands run in this process (tests/clirun.py: the same command, exit code and stderr, no Python start), but
# --version and --help, which check `python -m openkvs` itself.
pytestmark = pytest.mark.server_process


def openkvs_process(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_")}
    return subprocess.run([sys.executable, "-m", "openkvs", *args], capture_output=True, text=True, timeout=60,
                          env=clean)


def openkvs_cli(*args: str, cwd: Any = None, env: dict[str, str] | None = None) -> Ran:
    return openkvs_here(*args, cwd=cwd, env={k: v for k, v in (env or {}).items() if k.startswith("OPENKVS_")},
                        keep=())


def test_version_and_help_speak_to_a_user() -> None:
    out = openkvs_process("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"openkvs {openkvs.__version__}"
    help = openkvs_process("--help").stdout
    assert help.splitlines()[2].strip() == "Your own server for Apify's storage API, and a client for it."
    assert "thin shell" not in help
    assert "  openkvs download STORE            the store as one ZIP file, resumable\n" in help  # not rewrapped
    for command in ("download", "upload", "import", "export", "serve", "users", "stores"):
        assert f"\n  {command} " in help, command


def test_lists_show_users_tokens_and_stores_but_never_a_token(server: Any) -> None:
    bob = server.new_user("bob")
    users = server.cli_here("users", "list")  # (no admin: the server started with alice there already)
    assert [line.split("\t")[0] for line in users.splitlines()] == ["alice", "bob"]
    tokens = server.cli_here("tokens", "list")
    assert server.token not in tokens and bob not in tokens
    assert [line.split("\t")[0] for line in tokens.splitlines()] == ["alice", "bob"]
    assert server.cli_here("tokens", "list", "bob").count("\n") == 1
    with server.client() as c:
        sid = c.post("/v2/key-value-stores?name=photos").json()["data"]["id"]
        c.put("/v2/key-value-stores/~photos/records/a", content=b"12345")
    with server.client(bob) as c:
        c.post("/v2/key-value-stores?name=notes")
    listed = server.cli_here("stores", "list").splitlines()
    assert [line.split("\t")[:2] for line in listed] == [[sid, "alice~photos"], [listed[1].split("\t")[0], "bob~notes"]]
    assert server.cli_here("stores", "list", "--user", "bob").count("\n") == 1


def test_an_admin_revokes_a_token_by_the_id_tokens_list_shows(server: Any) -> None:
    """An admin never sees a user's token, only its ID in ``tokens list``: that revokes it, and nothing else."""
    bob = server.new_user("bob")
    bob2 = server.cli_here("tokens", "create", "bob").strip()
    ids = [line.split("\t")[2] for line in server.cli_here("tokens", "list", "bob").splitlines()]
    assert len(ids) == 2
    with server.client(bob) as c:
        assert c.get("/v2/key-value-stores").status_code == 200
    assert server.cli_here("tokens", "revoke", ids[0]).strip() == "revoked"
    left = server.cli_here("tokens", "list", "bob")
    assert ids[0] not in left and ids[1] in left
    revoked, kept = (bob, bob2) if auth.hash_token(bob).startswith(ids[0]) else (bob2, bob)
    deadline = time.monotonic() + 30  # (servers drop a revoked token within seconds)
    while time.monotonic() < deadline:
        with server.client(revoked) as c:
            if c.get("/v2/key-value-stores").status_code == 401:
                break
        time.sleep(0.2)
    with server.client(revoked) as c, server.client(kept) as k:
        assert c.get("/v2/key-value-stores").status_code == 401
        assert k.get("/v2/key-value-stores").status_code == 200
    again = openkvs_cli("tokens", "revoke", ids[0], *server.storage_args(), env=server.env)
    assert again.returncode == 1 and f"No token has the ID {ids[0]}." in again.stderr
    wrong = openkvs_cli("tokens", "revoke", "not-a-token", *server.storage_args(), env=server.env)
    assert wrong.returncode == 2 and "or its ID" in wrong.stderr


def test_tilde_name_names_a_store_and_delete_removes_it(server: Any) -> None:
    server.new_user("bob")
    with server.client() as c:
        c.post("/v2/key-value-stores?name=photos")
        c.post("/v2/key-value-stores?name=shared")
    with server.client(server.extra_tokens["bob"]) as c:
        c.post("/v2/key-value-stores?name=shared")
    added = server.cli_here("grants", "add", "~photos", "bob", "--read")
    assert "bob may now read the key-value store alice~photos" in added
    ambiguous = openkvs_cli("grants", "list", "~shared", *server.storage_args(), env=server.env)
    assert ambiguous.returncode == 1 and "alice~shared" in ambiguous.stderr and "bob~shared" in ambiguous.stderr
    assert "deleted alice~photos" in server.cli_here("stores", "delete", "~photos", "--yes")
    with server.client() as c:
        assert c.get("/v2/key-value-stores/~photos").status_code == 404
    refused = openkvs_cli("stores", "delete", "alice~shared", *server.storage_args(), env=server.env)  # no --yes
    assert refused.returncode == 1 and "Aborted" in refused.stderr
    assert "alice~shared" in server.cli_here("stores", "list")


def test_a_folder_without_a_database_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    for args in (["tokens", "create", "admin"], ["users", "list"], ["users", "create", "carol"], ["stores", "list"]):
        out = openkvs_cli(*args, cwd=tmp_path)
        assert out.returncode == 1, args
        assert f"There is no openkvs database in {tmp_path / 'data'}" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []
    assert openkvs_cli("migrate", cwd=tmp_path).returncode == 0  # the way to make one on purpose
    assert openkvs_cli("users", "create", "carol", cwd=tmp_path).returncode == 0


def test_a_postgres_schema_without_a_database_is_an_error(tmp_path: Path) -> None:
    from tests.conftest import DATABASE_URL, postgres_reachable, unavailable

    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    env = {"OPENKVS_DATABASE_URL": DATABASE_URL, "OPENKVS_DATABASE_SCHEMA": "t_never_made"}
    out = openkvs_cli("tokens", "create", "admin", env=env)
    assert out.returncode == 1 and "no openkvs database in schema 't_never_made'" in out.stderr, out.stderr
    check = subprocess.run(
        ["psql", DATABASE_URL, "-Atc", "SELECT count(*) FROM pg_namespace WHERE nspname = 't_never_made'"],
        capture_output=True, text=True, timeout=30,
    )
    assert check.stdout.strip() == "0"
