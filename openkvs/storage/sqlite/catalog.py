"""``SQLiteCatalog``, the methods of ``SQLiteStorage`` on users, tokens, stores and grants, and the administration's
listings: their SQL, run through the backend's ``_point_read``, ``_read`` and ``_write`` (connections.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from ..base import (
    KVS,
    Grant,
    NameNotUnique,
    NotFound,
    Store,
    StoredTotals,
    TokenInfo,
    User,
    UsernameTaken,
    listed,
)
from ..ids import new_id
from .tables import EPOCH, GRANT_SELECT, LIST_SELECT, STORE_SELECT, from_ms, now_ms, to_grant, to_store, to_user

T = TypeVar("T")


class Runs(Protocol):
    """How the SQL runs: ``fn(conn, *args)`` on a connection of ``connections.Database`` (``point_read``, ``read``,
    ``write``), its result returned."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


class SQLiteCatalog:
    """The users, tokens, stores and grants methods of SQLiteStorage (which sets the three below)."""

    _point_read: Runs
    _read: Runs
    _write: Runs

    # -- users and tokens --------------------------------------------------------------------------------------

    async def create_user(self, username: str) -> User:
        user = User(id=new_id(), username=username, created_at=from_ms(now_ms()))

        def txn(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users(id, username, created_at) VALUES (?, ?, ?)",
                    (user.id, username, int((user.created_at - EPOCH) / timedelta(milliseconds=1))),
                )
            except sqlite3.IntegrityError as exc:
                raise UsernameTaken(username) from exc

        await self._write(txn)
        return user

    async def get_user_by_name(self, username: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute("SELECT id, username, created_at FROM users WHERE username = ?", (username,)).fetchone()
            return to_user(row) if row else None

        return await self._point_read(q)

    async def add_token(self, user_id: str, token_hash: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id}")
            conn.execute(
                "INSERT INTO tokens(hash, user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET user_id = excluded.user_id",
                (token_hash, user_id, now_ms()),
            )

        await self._write(txn)

    async def user_by_token(self, token_hash: str) -> User | None:
        def q(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT u.id, u.username, u.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.hash = ?",
                (token_hash,),
            ).fetchone()
            return to_user(row) if row else None

        return await self._point_read(q)

    async def revoke_token(self, token_hash: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,)).rowcount > 0
        )

    async def token_hashes(self, token_id: str) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT hash FROM tokens WHERE substr(hash, 1, ?) = ? ORDER BY hash", (TokenInfo.ID_LENGTH, token_id)
            )
            return [r[0] for r in rows]

        return await self._read(q)

    # -- stores ------------------------------------------------------------------------------------------------

    @staticmethod
    def _store_by_id(conn: sqlite3.Connection, store_id: str) -> Store | None:
        row = conn.execute(STORE_SELECT + " WHERE s.id = ?", (store_id,)).fetchone()
        return to_store(row) if row else None

    @staticmethod
    def _store_by_name(conn: sqlite3.Connection, user_id: str, name: str, kind: str) -> Store | None:
        row = conn.execute(
            STORE_SELECT + " WHERE s.user_id = ? AND s.kind = ? AND s.name = ? COLLATE NOCASE", (user_id, kind, name)
        ).fetchone()
        return to_store(row) if row else None

    @staticmethod
    def _insert_store(
        conn: sqlite3.Connection,
        user_id: str,
        name: str | None,
        schema: dict[str, Any] | None,
        signing_key: str,
        kind: str,
    ) -> Store:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"user {user_id}")
        store_id = new_id()
        now = now_ms()
        try:
            conn.execute(
                "INSERT INTO stores(id, kind, user_id, name, general_access, schema, url_signing_secret_key,"
                " created_at, modified_at, accessed_at) VALUES (?, ?, ?, ?, 'FOLLOW_USER_SETTING', ?, ?, ?, ?, ?)",
                (
                    store_id,
                    kind,
                    user_id,
                    name,
                    json.dumps(schema, separators=(",", ":")) if schema is not None else None,
                    signing_key,
                    now,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise NameNotUnique(name) from exc
        store = SQLiteCatalog._store_by_id(conn, store_id)
        assert store is not None
        return store

    async def create_store(
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> Store:
        return await self._write(self._insert_store, user_id, name, schema, signing_key, kind)

    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> tuple[Store, bool]:
        def txn(conn: sqlite3.Connection) -> tuple[Store, bool]:
            # BEGIN IMMEDIATE serialises this with every other writer of every process: look, then insert.
            existing = self._store_by_name(conn, user_id, name, kind)
            if existing is not None:
                return existing, False
            return self._insert_store(conn, user_id, name, schema, signing_key, kind), True

        return await self._write(txn)

    async def get_store(self, store_id: str) -> Store | None:
        return await self._point_read(self._store_by_id, store_id)

    async def get_store_by_name(self, user_id: str, name: str, *, kind: str = KVS) -> Store | None:
        return await self._point_read(self._store_by_name, user_id, name, kind)

    async def list_stores(
        self,
        user_id: str,
        *,
        offset: int,
        limit: int,
        desc: bool,
        unnamed: bool,
        ownership: str | None,
        kind: str = KVS,
    ) -> tuple[int, list[Store]]:
        shared = "s.id IN (SELECT store_id FROM grants WHERE user_id = ?)"
        if ownership == "ownedByMe":
            where, params = "s.user_id = ?", [user_id]
        elif ownership == "sharedWithMe":
            where, params = shared, [user_id]
        elif ownership is None:
            where, params = f"(s.user_id = ? OR {shared})", [user_id, user_id]
        else:
            raise ValueError(f"unknown ownership {ownership!r}")
        where += " AND s.kind = ?"
        params.append(kind)
        if not unnamed:
            where += " AND s.name IS NOT NULL"
        order = "DESC" if desc else "ASC"

        def q(conn: sqlite3.Connection) -> tuple[int, list[Store]]:
            conn.execute("BEGIN")
            try:
                total = conn.execute(f"SELECT COUNT(*) FROM stores s WHERE {where}", params).fetchone()[0]
                rows = conn.execute(
                    # stores made in the same millisecond in the order they were made (rowid), not by random ID
                    f"{LIST_SELECT} WHERE {where} ORDER BY s.created_at {order}, s.rowid {order} LIMIT ? OFFSET ?",
                    [*params, limit, offset],
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return total, listed([to_store(r) for r in rows])

        return await self._read(q)

    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        columns = {
            "name": "name",
            "title": "title",
            "general_access": "general_access",
            "schema": "schema",
            "url_signing_secret_key": "url_signing_secret_key",
        }
        unknown = set(changes) - set(columns)
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")

        def txn(conn: sqlite3.Connection) -> Store:
            sets, params = ["modified_at = ?"], [now_ms()]
            for field_name, value in changes.items():
                if field_name == "schema" and value is not None:
                    value = json.dumps(value, separators=(",", ":"))
                sets.append(f"{columns[field_name]} = ?")
                params.append(value)
            try:
                cur = conn.execute(f"UPDATE stores SET {', '.join(sets)} WHERE id = ?", [*params, store_id])
            except sqlite3.IntegrityError as exc:
                raise NameNotUnique(changes.get("name")) from exc
            if cur.rowcount == 0:
                raise NotFound(f"store {store_id}")
            store = self._store_by_id(conn, store_id)
            assert store is not None
            return store

        return await self._write(txn)

    async def delete_store(self, store_id: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
                return False
            conn.execute(
                "INSERT INTO garbage(path, created_at, store_id) SELECT path, ?, store_id FROM records "
                "WHERE store_id = ? AND path IS NOT NULL",
                (now_ms(), store_id),
            )
            conn.execute(
                "DELETE FROM record_data WHERE id IN "
                "(SELECT data_id FROM records WHERE store_id = ? AND data_id IS NOT NULL)",
                (store_id,),
            )
            conn.execute("DELETE FROM records WHERE store_id = ?", (store_id,))
            conn.execute("DELETE FROM grants WHERE store_id = ?", (store_id,))
            conn.execute("DELETE FROM stores WHERE id = ?", (store_id,))
            return True

        return await self._write(txn)

    # -- grants ------------------------------------------------------------------------------------------------

    async def set_grant(self, store_id: str, user_id: str, can_write: bool) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
                raise NotFound(f"store {store_id}")
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id}")
            conn.execute(
                "INSERT INTO grants(store_id, user_id, can_write) VALUES (?, ?, ?) "
                "ON CONFLICT(store_id, user_id) DO UPDATE SET can_write = excluded.can_write",
                (store_id, user_id, int(can_write)),
            )

        await self._write(txn)

    async def remove_grant(self, store_id: str, user_id: str) -> bool:
        return await self._write(
            lambda conn: conn.execute(
                "DELETE FROM grants WHERE store_id = ? AND user_id = ?", (store_id, user_id)
            ).rowcount
            > 0
        )

    async def list_grants(self, store_id: str) -> list[Grant]:
        def q(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(GRANT_SELECT + "WHERE g.store_id = ? ORDER BY u.username", (store_id,))
            return [to_grant(r) for r in rows]

        return await self._read(q)

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        def q(conn: sqlite3.Connection) -> Grant | None:
            r = conn.execute(
                GRANT_SELECT + "WHERE g.store_id = ? AND g.user_id = ?", (store_id, user_id)
            ).fetchone()
            return to_grant(r) if r else None

        return await self._point_read(q)

    async def user_grants(self, user_id: str, store_ids: Sequence[str]) -> dict[str, Grant]:
        ids = list(dict.fromkeys(store_ids))
        if not ids:
            return {}

        def q(conn: sqlite3.Connection) -> dict[str, Grant]:
            rows = conn.execute(
                GRANT_SELECT + f"WHERE g.user_id = ? AND g.store_id IN ({', '.join('?' * len(ids))})",
                (user_id, *ids),
            )
            return {r[0]: to_grant(r) for r in rows}

        return await self._read(q)

    # -- administration (the command line's users list and tokens list) ----------------------------------------

    async def stored_totals(self) -> StoredTotals:
        def q(conn: sqlite3.Connection) -> StoredTotals:
            # the records from each store's kept count: a scrape of /metrics reads one row per store, not every record;
            # a dataset's bytes are kept with its item count (its stores row says 0)
            kinds = conn.execute(
                "SELECT s.kind, count(*), coalesce(sum(s.storage_bytes + coalesce(d.bytes, 0)), 0), "
                "coalesce(sum(s.record_count), 0) FROM stores s LEFT JOIN dataset_counts d ON d.store_id = s.id "
                "GROUP BY s.kind"
            ).fetchall()
            records = sum(r for *_, r in kinds)
            return StoredTotals({k: n for k, n, _, _ in kinds}, {k: b for k, _, b, _ in kinds}, records)

        return await self._read(q)

    async def list_users(self) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            return [to_user(r) for r in conn.execute("SELECT id, username, created_at FROM users ORDER BY username")]

        return await self._read(q)

    async def list_tokens(self) -> list[TokenInfo]:
        def q(conn: sqlite3.Connection) -> list[TokenInfo]:
            rows = conn.execute(
                "SELECT u.username, t.hash, t.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
                "ORDER BY u.username, t.created_at, t.hash"
            )
            return [TokenInfo(r[0], r[1][: TokenInfo.ID_LENGTH], from_ms(r[2])) for r in rows]

        return await self._read(q)
