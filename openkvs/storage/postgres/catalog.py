"""``PgCatalog``, the methods of ``PostgresStorage`` on users, tokens, stores and grants, and the administration's
listings: their SQL, run through the backend's shortcuts to its ``connections.Database``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import asyncpg
from asyncpg import exceptions as pgx

from ..base import (
    KVS,
    Grant,
    NameNotUnique,
    NotFound,
    StorageError,
    Store,
    StoredTotals,
    TokenInfo,
    User,
    UsernameTaken,
    listed,
)
from ..ids import new_id
from .connections import CONNECTION_ERRORS, deadlock_retried, pooled, unavailable
from .tables import (
    GRANT_SELECT,
    IN_BUCKET_SQL,
    LIST_COLS,
    NOW_MS,
    STORE_COLS,
    STORE_FROM,
    to_grant,
    to_store,
    to_user,
)

T = TypeVar("T")

_STORE_BY_NAME = (
    f"SELECT {STORE_COLS} FROM {STORE_FROM} WHERE s.user_id = $1 AND s.kind = $3 AND lower(s.name) = lower($2)"
)


class Runs(Protocol):
    """``connections.Database.run``: ``fn`` on a pooled connection (in a transaction if ``tx``)."""

    def __call__(
        self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, tx: bool = False, retry: bool = False
    ) -> Awaitable[T]: ...


class PgCatalog:
    """The users, tokens, stores and grants methods of PostgresStorage (which sets the five below)."""

    _run: Runs
    _fetch: Callable[..., Awaitable[list[asyncpg.Record]]]
    _fetchrow: Callable[..., Awaitable[asyncpg.Record | None]]
    _execute: Callable[..., Awaitable[str]]
    _p: Callable[[], asyncpg.Pool]

    # -- users and tokens --------------------------------------------------------------------------------------

    async def create_user(self, username: str) -> User:
        try:
            user_id = new_id()
            row = await self._run(
                lambda c: c.fetchrow(
                    f"INSERT INTO users (id, username, created_at) VALUES ($1, $2, {NOW_MS}) RETURNING *",
                    user_id,
                    username,
                )
            )
        except pgx.UniqueViolationError as exc:
            raise UsernameTaken(username) from exc
        assert row is not None
        return to_user(row)

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self._fetchrow("SELECT * FROM users WHERE username = $1", username)
        return to_user(row) if row else None

    async def add_token(self, user_id: str, token_hash: str) -> None:
        try:
            await self._execute(
                f"""INSERT INTO tokens (token_hash, user_id, created_at) VALUES ($1, $2, {NOW_MS})
                    ON CONFLICT (token_hash) DO UPDATE SET user_id = EXCLUDED.user_id""",
                token_hash,
                user_id,
            )
        except pgx.ForeignKeyViolationError as exc:
            raise NotFound(f"user {user_id} not found") from exc

    async def user_by_token(self, token_hash: str) -> User | None:
        row = await self._fetchrow(
            "SELECT u.* FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1", token_hash
        )
        return to_user(row) if row else None

    async def revoke_token(self, token_hash: str) -> bool:
        res = await self._execute("DELETE FROM tokens WHERE token_hash = $1", token_hash)
        return res.endswith(" 1")

    async def token_hashes(self, token_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT token_hash FROM tokens WHERE left(token_hash, $1) = $2 ORDER BY token_hash",
            TokenInfo.ID_LENGTH,
            token_id,
        )
        return [r["token_hash"] for r in rows]

    # -- stores ------------------------------------------------------------------------------------------------

    async def _store_by_id(self, conn: asyncpg.Connection, store_id: str) -> Store | None:
        row = await conn.fetchrow(f"SELECT {STORE_COLS} FROM {STORE_FROM} WHERE s.id = $1", store_id)
        return to_store(row) if row else None

    _INSERT_STORE = f"""INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, schema,
            url_signing_secret_key, kind)
        SELECT $1, $2, u.id, t.now, t.now, t.now, $4, $5, $6 FROM users u, (SELECT {NOW_MS} AS now) t
        WHERE u.id = $3"""

    async def create_store(
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> Store:
        store_id = new_id()

        async def go(conn: asyncpg.Connection) -> Store:
            res = await conn.execute(self._INSERT_STORE, store_id, name, user_id, schema, signing_key, kind)
            if res.endswith(" 0"):
                raise NotFound(f"user {user_id} not found")
            store = await self._store_by_id(conn, store_id)
            assert store is not None
            return store

        try:
            return await self._run(go)
        except pgx.UniqueViolationError as exc:
            raise NameNotUnique(name) from exc

    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> tuple[Store, bool]:
        async def go(conn: asyncpg.Connection) -> tuple[Store, bool]:
            for _ in range(10):
                store_id = new_id()
                res = await conn.execute(
                    self._INSERT_STORE + " ON CONFLICT (user_id, kind, lower(name)) DO NOTHING",
                    store_id,
                    name,
                    user_id,
                    schema,
                    signing_key,
                    kind,
                )
                if res.endswith(" 1"):
                    store = await self._store_by_id(conn, store_id)
                    assert store is not None
                    return store, True
                row = await conn.fetchrow(_STORE_BY_NAME, user_id, name, kind)
                if row is not None:
                    return to_store(row), False
                if not await conn.fetchval("SELECT true FROM users WHERE id = $1", user_id):
                    raise NotFound(f"user {user_id} not found")
                # the conflicting store was deleted in between: try again
            raise StorageError("get_or_create_store: too much contention")

        return await self._run(go)

    async def get_store(self, store_id: str) -> Store | None:
        return await self._run(lambda c: self._store_by_id(c, store_id), retry=True)

    async def get_store_by_name(self, user_id: str, name: str, *, kind: str = KVS) -> Store | None:
        row = await self._fetchrow(_STORE_BY_NAME, user_id, name, kind)
        return to_store(row) if row else None

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
        owned = "s.user_id = $1"
        shared = "s.id IN (SELECT g.store_id FROM grants g WHERE g.user_id = $1)"
        if ownership == "ownedByMe":
            cond = owned
        elif ownership == "sharedWithMe":
            cond = shared
        else:
            cond = f"({owned} OR {shared})"
        cond += " AND s.kind = $2"
        if not unnamed:
            cond += " AND s.name IS NOT NULL"
        order = "DESC" if desc else "ASC"

        async def go(conn: asyncpg.Connection) -> tuple[int, list[Store]]:
            total = await conn.fetchval(f"SELECT count(*) FROM stores s WHERE {cond}", user_id, kind)
            rows = await conn.fetch(
                f"""SELECT {LIST_COLS} FROM {STORE_FROM} WHERE {cond}
                    ORDER BY s.created_at {order}, s.id {order} OFFSET $3 LIMIT $4""",
                user_id,
                kind,
                max(0, offset),
                max(0, limit),
            )
            return total, listed([to_store(r) for r in rows])

        # one snapshot for the count and the page
        try:
            async with pooled(self._p()) as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await go(conn)
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc

    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        columns = {
            "name": "name",
            "title": "title",
            "general_access": "general_access",
            "schema": "schema",
            "url_signing_secret_key": "url_signing_secret_key",
        }
        sets: list[str] = []
        args: list[Any] = [store_id]
        for k, v in changes.items():
            if k not in columns:
                raise ValueError(f"cannot change {k!r}")
            args.append(v)
            sets.append(f"{columns[k]} = ${len(args)}")
        sets.append(f"modified_at = {NOW_MS}")

        async def go(conn: asyncpg.Connection) -> Store:
            res = await conn.execute(f"UPDATE stores SET {', '.join(sets)} WHERE id = $1", *args)
            if res.endswith(" 0"):
                raise NotFound(f"store {store_id} not found")
            store = await self._store_by_id(conn, store_id)
            assert store is not None
            return store

        try:
            return await self._run(go, tx=True)
        except pgx.UniqueViolationError as exc:
            raise NameNotUnique(changes.get("name")) from exc

    async def delete_store(self, store_id: str) -> bool:
        async def go(conn: asyncpg.Connection) -> bool:
            if await conn.fetchval("SELECT true FROM stores WHERE id = $1 FOR UPDATE", store_id) is None:
                return False
            await conn.execute(
                f"""INSERT INTO garbage (blob_id, created_at, in_bucket)
                    SELECT blob_id, {NOW_MS}, {IN_BUCKET_SQL.format(size="size", chunk_size="chunk_size")}
                    FROM records WHERE store_id = $1""",
                store_id,
            )
            await conn.execute("DELETE FROM stores WHERE id = $1", store_id)
            return True

        return await deadlock_retried("store deletion", lambda: self._run(go, tx=True))

    # -- grants ------------------------------------------------------------------------------------------------

    async def set_grant(self, store_id: str, user_id: str, can_write: bool) -> None:
        try:
            await self._execute(
                """INSERT INTO grants (store_id, user_id, can_write) VALUES ($1, $2, $3)
                   ON CONFLICT (store_id, user_id) DO UPDATE SET can_write = EXCLUDED.can_write""",
                store_id,
                user_id,
                can_write,
            )
        except pgx.ForeignKeyViolationError as exc:
            raise NotFound(f"store {store_id} or user {user_id} not found") from exc

    async def remove_grant(self, store_id: str, user_id: str) -> bool:
        res = await self._execute("DELETE FROM grants WHERE store_id = $1 AND user_id = $2", store_id, user_id)
        return res.endswith(" 1")

    async def list_grants(self, store_id: str) -> list[Grant]:
        rows = await self._fetch(
            GRANT_SELECT + "WHERE g.store_id = $1 ORDER BY u.username, g.user_id",
            store_id,
        )
        return [to_grant(r) for r in rows]

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        r = await self._fetchrow(
            GRANT_SELECT + "WHERE g.store_id = $1 AND g.user_id = $2",
            store_id,
            user_id,
        )
        return to_grant(r) if r else None

    async def user_grants(self, user_id: str, store_ids: Sequence[str]) -> dict[str, Grant]:
        if not store_ids:
            return {}
        rows = await self._fetch(
            GRANT_SELECT + "WHERE g.user_id = $1 AND g.store_id = ANY($2::text[])", user_id, list(store_ids)
        )
        return {r["store_id"]: to_grant(r) for r in rows}

    # -- administration (the command line's users list and tokens list) ----------------------------------------

    async def list_users(self) -> list[User]:
        return [to_user(r) for r in await self._fetch("SELECT * FROM users ORDER BY username")]

    async def stored_totals(self) -> StoredTotals:
        async def go(conn: asyncpg.Connection) -> StoredTotals:
            # the records from each store's kept count: a scrape of /metrics reads one row per store, not every record;
            # a dataset's bytes are kept with its item count (its stores row says 0)
            kinds = await conn.fetch(
                "SELECT s.kind, count(*) AS n, coalesce(sum(s.storage_bytes + coalesce(d.bytes, 0)), 0)::bigint AS b, "
                "coalesce(sum(s.record_count), 0)::bigint AS r FROM stores s "
                "LEFT JOIN dataset_counts d ON d.store_id = s.id GROUP BY s.kind"
            )
            records = sum(r["r"] for r in kinds)
            return StoredTotals({r["kind"]: r["n"] for r in kinds}, {r["kind"]: r["b"] for r in kinds}, records)

        return await self._run(go, retry=True)

    async def list_tokens(self) -> list[TokenInfo]:
        rows = await self._fetch(
            "SELECT u.username, t.token_hash, t.created_at FROM tokens t JOIN users u ON u.id = t.user_id "
            "ORDER BY u.username, t.created_at, t.token_hash"
        )
        return [TokenInfo(r["username"], r["token_hash"][: TokenInfo.ID_LENGTH], r["created_at"]) for r in rows]
