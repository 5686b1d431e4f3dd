"""Key-value stores, datasets and request queues are rows of one table told apart by ``kind``: each kind has its own
names, listings and look-ups, and a database made before kinds existed keeps its stores as key-value stores."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from openkvs.storage.base import DATASET, KVS, QUEUE, NameNotUnique, Storage
from openkvs.storage.ids import new_id

pytestmark = pytest.mark.anyio
DATA = Path(__file__).parent / "data"


async def test_a_name_is_unique_per_kind_not_across_kinds(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    made = {kind: await storage.create_store(alice.id, "results", None, "k", kind=kind) for kind in (KVS, DATASET, QUEUE)}
    assert len({s.id for s in made.values()}) == 3
    assert [made[k].kind for k in (KVS, DATASET, QUEUE)] == [KVS, DATASET, QUEUE]
    with pytest.raises(NameNotUnique):
        await storage.create_store(alice.id, "RESULTS", None, "k", kind=DATASET)
    for kind, store in made.items():
        assert (await storage.get_store_by_name(alice.id, "Results", kind=kind)).id == store.id
        again, created = await storage.get_or_create_store(alice.id, "results", None, "k2", kind=kind)
        assert (again.id, created) == (store.id, False)
    # a rename into a name another kind uses is fine, into one of the same kind is not
    await storage.create_store(alice.id, "other", None, "k", kind=QUEUE)
    renamed = await storage.update_store(made[KVS].id, {"name": "other", "title": "a title"})
    assert (renamed.name, renamed.title, renamed.kind) == ("other", "a title", KVS)
    with pytest.raises(NameNotUnique):
        await storage.update_store(made[QUEUE].id, {"name": "other"})


async def test_listings_and_look_ups_keep_to_their_kind(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    bob = await storage.create_user("bob")
    store = await storage.create_store(alice.id, "s", None, "k")
    dataset = await storage.create_store(alice.id, "d", None, "k", kind=DATASET)
    shared_queue = await storage.create_store(bob.id, "q", None, "k", kind=QUEUE)
    await storage.set_grant(shared_queue.id, alice.id, can_write=True)

    def ids(page: tuple[int, list]) -> tuple[int, list[str]]:
        return page[0], [s.id for s in page[1]]

    kw = dict(offset=0, limit=10, desc=False, unnamed=True, ownership=None)
    assert ids(await storage.list_stores(alice.id, **kw)) == (1, [store.id])
    assert ids(await storage.list_stores(alice.id, **kw, kind=DATASET)) == (1, [dataset.id])
    assert ids(await storage.list_stores(alice.id, **kw, kind=QUEUE)) == (1, [shared_queue.id])

    # by ID, a resource of another kind is not found; get_store finds any kind
    assert await storage.look_up_store(alice.id, store_id=dataset.id) is None
    assert await storage.look_up_store(alice.id, store_id=dataset.id, key="k") is None
    found = await storage.look_up_store(alice.id, store_id=dataset.id, kind=DATASET)
    assert found is not None and found.store.kind == DATASET
    assert (await storage.get_store(dataset.id)).kind == DATASET
    # by name too, and the grant comes along for the queue shared with alice
    assert await storage.look_up_store(alice.id, owner_id=alice.id, name="d") is None
    assert (await storage.look_up_store(alice.id, owner_id=alice.id, name="D", kind=DATASET)).store.id == dataset.id
    q = await storage.look_up_store(alice.id, owner_id=bob.id, name="q", kind=QUEUE)
    assert q is not None and q.grant is True
    assert (await storage.user_grants(alice.id, [shared_queue.id]))[shared_queue.id].can_write

    assert await storage.delete_store(dataset.id)
    assert await storage.get_store(dataset.id) is None


async def test_a_version_2_sqlite_database_keeps_its_stores_as_key_value_stores(tmp_path: Path) -> None:
    from openkvs.storage.sqlite import DB_NAME, TABLES_VERSION, SQLiteStorage

    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / DB_NAME)
    conn.executescript((DATA / "sqlite-tables-v2.sql").read_text())
    conn.executescript(
        """INSERT INTO users VALUES ('u1', 'old', 0);
           INSERT INTO stores (id, user_id, name, general_access, url_signing_secret_key, created_at, modified_at,
               accessed_at) VALUES ('s1', 'u1', 'old', 'FOLLOW_USER_SETTING', 'k', 0, 0, 0);
           PRAGMA journal_mode = WAL; PRAGMA user_version = 2;"""
    )
    conn.close()
    async with SQLiteStorage(data) as st:
        assert await st.tables_version() == (TABLES_VERSION, TABLES_VERSION)
        old = await st.get_store("s1")
        assert (old.kind, old.name, old.title) == (KVS, "old", None)
        assert (await st.get_store_by_name("u1", "old")).id == "s1"
        # the name is now free for a dataset, and still taken for a key-value store
        assert (await st.create_store("u1", "old", None, "k", kind=DATASET)).kind == DATASET
        with pytest.raises(NameNotUnique):
            await st.create_store("u1", "OLD", None, "k")


async def test_a_version_2_postgres_schema_keeps_its_stores_as_key_value_stores() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from openkvs.storage import postgres

    dsn = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = await asyncpg.connect(dsn)
    except OSError as exc:
        from tests.conftest import unavailable

        unavailable(f"PostgreSQL at {dsn}: {exc}")
    schema = f"test_{new_id().lower()}"
    q = f'"{schema}"'
    try:
        await admin.execute(f"CREATE SCHEMA {q}; SET search_path = {q}")
        for step in postgres.MIGRATIONS[:2]:
            await admin.execute(step)
        await admin.execute(
            """CREATE TABLE schema_version (version integer NOT NULL); INSERT INTO schema_version VALUES (2);
               INSERT INTO users VALUES ('u1', 'old', now());
               INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret_key)
                   VALUES ('s1', 'old', 'u1', now(), now(), now(), 'k');
               RESET search_path"""
        )
        st = postgres.PostgresStorage(dsn, namespace=schema)
        await st.open()
        try:
            assert await st.tables_version() == (postgres.TABLES_VERSION, postgres.TABLES_VERSION)
            old = await st.get_store("s1")
            assert (old.kind, old.name, old.title) == (KVS, "old", None)
            assert (await st.create_store("u1", "old", None, "k", kind=QUEUE)).kind == QUEUE
            with pytest.raises(NameNotUnique):
                await st.create_store("u1", "OLD", None, "k")
        finally:
            await st.aclose()
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {q} CASCADE")
        await admin.close()
