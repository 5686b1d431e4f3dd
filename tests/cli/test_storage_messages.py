"""What the commands on the storage say they did, as a user runs them (issue 13; in this process, tests/clirun.py:
what a command prints and returns is the same, without a Python start for each). ``openkvs migrate``: created
the database, upgraded it from one version to another, or found it current (it said "schema is current" after
creating one), on SQLite and on a PostgreSQL schema of the test's own."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path

import pytest

from tests.clirun import Ran, openkvs_here
from tests.conftest import DATABASE_URL, postgres_reachable, unavailable
from tests.storage.conftest import UNDO_PACKED_ROWS_SQLITE


def openkvs_cli(*args: str, check: bool = True) -> Ran:
    """``openkvs ARGS`` with no OPENKVS_, AWS_ or APIFY_ variable set."""
    out = openkvs_here(*args, unset=("OPENKVS_", "AWS_", "APIFY_"), keep=())
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_sqlite_migrate_says_created_upgraded_or_current(tmp_path: Path) -> None:
    from openkvs.storage.sqlite import TABLES_VERSION

    data = tmp_path / "data"
    where = str(data.resolve())
    first = openkvs_cli("migrate", "--data-dir", str(data))
    assert first.stdout == f"created the database at version {TABLES_VERSION} in {where}\n"
    again = openkvs_cli("migrate", "--data-dir", str(data))
    assert again.stdout == f"the database in {where} is already current (version {TABLES_VERSION})\n"

    with sqlite3.connect(data / "openkvs.sqlite3") as db:  # back to the version before the last upgrade
        db.executescript(UNDO_PACKED_ROWS_SQLITE + f"PRAGMA user_version = {TABLES_VERSION - 1};")
    upgraded = openkvs_cli("migrate", "--data-dir", str(data))
    assert upgraded.stdout == (
        f"upgraded the database in {where} from version {TABLES_VERSION - 1} to {TABLES_VERSION}\n"
    )
    with sqlite3.connect(data / "openkvs.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == TABLES_VERSION


@pytest.mark.postgres
def test_postgres_migrate_says_created_upgraded_or_current() -> None:
    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    import asyncpg

    from openkvs.storage.postgres import TABLES_VERSION

    schema = "t_" + secrets.token_hex(6)
    flags = ("--database-url", DATABASE_URL, "--database-schema", schema)

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(DATABASE_URL, server_settings={"search_path": f'"{schema}"'})
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        first = openkvs_cli("migrate", *flags)
        assert first.stdout == f"created the database at version {TABLES_VERSION} in schema '{schema}'\n"
        again = openkvs_cli("migrate", *flags)
        assert again.stdout == f"the database in schema '{schema}' is already current (version {TABLES_VERSION})\n"
        # back to the version before the last migration (11: each dataset's largest item)
        asyncio.run(sql(f"ALTER TABLE dataset_counts DROP COLUMN max_item; "
                        f"UPDATE schema_version SET version = {TABLES_VERSION - 1}"))
        upgraded = openkvs_cli("migrate", *flags)
        assert upgraded.stdout == (
            f"upgraded the database in schema '{schema}' from version {TABLES_VERSION - 1} to {TABLES_VERSION}\n"
        )
    finally:
        asyncio.run(sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_rotating_a_signing_key_says_which_store_and_what_it_means(tmp_path: Path) -> None:
    from openkvs.storage.sqlite import SQLiteStorage

    data = tmp_path / "data"

    async def make_store() -> str:
        async with SQLiteStorage(data, background=False) as st:
            user = await st.create_user("ann")
            return (await st.create_store(user.id, "shots", None, "k" * 32)).id

    store_id = asyncio.run(make_store())
    out = openkvs_cli("stores", "rotate-signing-key", "ann~shots", "--data-dir", str(data))
    assert out.stdout == "ann~shots has a new URL-signing key: the signed URLs made before no longer work\n"

    async def key() -> str:
        async with SQLiteStorage(data, background=False) as st:
            return (await st.get_store(store_id)).url_signing_secret_key  # type: ignore[union-attr]

    assert asyncio.run(key()) != "k" * 32


def test_taking_back_a_dataset_grant_says_the_dataset_has_a_new_key(tmp_path: Path) -> None:
    from openkvs.storage.base import DATASET
    from openkvs.storage.sqlite import SQLiteStorage

    data = tmp_path / "data"

    async def make_dataset() -> str:
        async with SQLiteStorage(data, background=False) as st:
            ann = await st.create_user("ann")
            await st.create_user("bob")
            return (await st.create_store(ann.id, "products", None, "k" * 32, kind=DATASET)).id

    dataset_id = asyncio.run(make_dataset())
    added = openkvs_cli("grants", "add", "ann~products", "bob", "--data-dir", str(data))
    assert added.stdout == "bob may now read the dataset ann~products\n"
    out = openkvs_cli("grants", "remove", "ann~products", "bob", "--data-dir", str(data))
    assert out.stdout == "removed; the dataset has a new URL-signing key (signed links made before stop working)\n"

    async def key() -> str:
        async with SQLiteStorage(data, background=False) as st:
            return (await st.get_store(dataset_id)).url_signing_secret_key  # type: ignore[union-attr]

    assert asyncio.run(key()) != "k" * 32
    again = openkvs_cli("grants", "remove", "ann~products", "bob", "--data-dir", str(data))
    assert again.stdout == "there was no such grant\n"


def test_a_dataset_named_to_the_stores_commands_is_called_a_dataset(tmp_path: Path) -> None:
    from openkvs.storage.base import DATASET
    from openkvs.storage.sqlite import SQLiteStorage

    data = tmp_path / "data"

    async def make_dataset() -> None:
        async with SQLiteStorage(data, background=False) as st:
            user = await st.create_user("ann")
            await st.create_store(user.id, "products", None, "k" * 32, kind=DATASET)

    asyncio.run(make_dataset())
    out = openkvs_cli("stores", "delete", "~products", "--yes", "--data-dir", str(data), check=False)
    assert out.returncode == 1
    assert out.stderr == (
        "Error: '~products' is a dataset, not a key-value store: 'openkvs stores' handles key-value stores only (the "
        "API and the web console handle datasets and request queues).\n"
    )
    missing = openkvs_cli("stores", "delete", "~nothing", "--yes", "--data-dir", str(data), check=False)
    assert missing.stderr == "Error: There is no key-value store '~nothing' (give an ID, OWNER~NAME or ~NAME).\n"


def test_grants_name_a_dataset_or_queue_that_shares_its_name_with_a_store(tmp_path: Path) -> None:
    # docs/sdk.md's set-up (and `openkvs import`) makes a store, a dataset and a queue of one name
    from openkvs.storage.base import DATASET, KVS, QUEUE
    from openkvs.storage.sqlite import SQLiteStorage

    data = tmp_path / "data"

    async def make() -> dict[str, str]:
        async with SQLiteStorage(data, background=False) as st:
            ann = await st.create_user("ann")
            await st.create_user("bob")
            ids = {kind: (await st.create_store(ann.id, "my-actor", None, "k" * 32, kind=kind)).id
                   for kind in (KVS, DATASET, QUEUE)}
            cat = await st.create_user("cat")
            ids["cat"] = (await st.create_store(cat.id, "my-actor", None, "k" * 32, kind=DATASET)).id
            return ids

    ids = asyncio.run(make())
    flags = ("--data-dir", str(data))
    same_owner = openkvs_cli("grants", "add", "ann~my-actor", "bob", "--read", *flags, check=False)
    assert same_owner.returncode == 1
    assert same_owner.stderr == (
        f"Error: 'ann~my-actor' could be any of the key-value store ann~my-actor ({ids[KVS]}), the dataset "
        f"ann~my-actor ({ids[DATASET]}), the request queue ann~my-actor ({ids[QUEUE]}): give its ID, or --kvs, "
        "--dataset or --queue.\n"
    )
    any_owner = openkvs_cli("grants", "add", "~my-actor", "bob", "--read", *flags, check=False)
    assert f"the dataset cat~my-actor ({ids['cat']})" in any_owner.stderr
    assert any_owner.stderr.endswith(": give its ID, or OWNER~NAME with --kvs, --dataset or --queue.\n")
    one_kind = openkvs_cli("grants", "add", "~my-actor", "bob", "--dataset", *flags, check=False)
    assert one_kind.stderr == (
        f"Error: '~my-actor' could be any of the dataset ann~my-actor ({ids[DATASET]}), the dataset cat~my-actor "
        f"({ids['cat']}): give its ID or OWNER~NAME.\n"
    )

    assert openkvs_cli("grants", "add", "ann~my-actor", "bob", "--dataset", *flags).stdout == (
        "bob may now read the dataset ann~my-actor\n"
    )
    assert openkvs_cli("grants", "add", "ann~my-actor", "bob", "--queue", "--write", *flags).returncode == 0
    assert openkvs_cli("grants", "list", "ann~my-actor", "--dataset", *flags).stdout == "bob\tread\n"
    assert openkvs_cli("grants", "list", "ann~my-actor", "--queue", *flags).stdout == "bob\twrite\n"
    unshared = openkvs_cli("grants", "list", "ann~my-actor", "--kvs", *flags)
    assert unshared.stdout == ""  # (a script's listing stays empty; the person is told on stderr)
    assert unshared.stderr == "The key-value store ann~my-actor is not shared with anyone.\n"
    assert openkvs_cli("grants", "remove", "ann~my-actor", "bob", "--queue", *flags).stdout.startswith(
        "removed; the request queue has a new URL-signing key"
    )
    assert openkvs_cli("grants", "list", "ann~my-actor", "--queue", *flags).stdout == ""
    assert openkvs_cli("grants", "list", ids[QUEUE], *flags).stdout == ""  # an ID needs no flag
    missing = openkvs_cli("grants", "list", "~nothing", "--queue", *flags, check=False)
    assert missing.stderr == "Error: There is no request queue '~nothing' (give an ID, OWNER~NAME or ~NAME).\n"


def test_one_file_that_cant_be_stored_is_one_file(tmp_path: Path) -> None:
    # the files are checked before anything is sent: no server needed
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "with space.txt").write_text("x")
    out = openkvs_cli("upload", str(tmp_path / "site"), "~s", "--url", "http://127.0.0.1:1", "--token", "t",
                      check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: 1 file can't be stored"), out.stderr


@pytest.mark.parametrize("command", [["migrate"], ["users", "list"]])
def test_a_database_url_that_is_not_postgresql_is_one_line(command: list[str]) -> None:
    out = openkvs_cli(*command, "--database-url", "mysql://db.internal/x", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: cannot use the storage: PostgreSQL at mysql://db.internal/x: invalid DSN")
    assert len(out.stderr.splitlines()) == 1, out.stderr


@pytest.mark.parametrize("command", [("migrate",), ("users", "list")])
def test_sqlite_newer_or_tableless_database_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A database of a newer openkvs (an older one started on it) and one that has a version but lost its tables:
    one line and status 1 (a RuntimeError's and an OperationalError's traceback before)."""
    from openkvs.storage.sqlite import TABLES_VERSION

    newer = tmp_path / "newer"
    openkvs_cli("migrate", "--data-dir", str(newer))
    with sqlite3.connect(newer / "openkvs.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {TABLES_VERSION + 1}")
    out = openkvs_cli(*command, "--data-dir", str(newer), check=False)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"Error: cannot use the storage: {newer / 'openkvs.sqlite3'} has schema version {TABLES_VERSION + 1}, "
        f"newer than this openkvs knows ({TABLES_VERSION}); upgrade openkvs\n"
    )

    bare = tmp_path / "bare"
    bare.mkdir()
    with sqlite3.connect(bare / "openkvs.sqlite3") as db:
        db.executescript("CREATE TABLE x (a); PRAGMA user_version = 5;")
    out = openkvs_cli(*command, "--data-dir", str(bare), check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert "is damaged (no such table" in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
