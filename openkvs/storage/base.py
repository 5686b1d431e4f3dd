"""The storage interface: what the HTTP layer may ask of a backend, and the value types it gets back.

Backends: ``sqlite.SQLiteStorage`` (the embedded default: SQLite in WAL mode plus files for large records) and
``postgres.PostgresStorage``. Both pass ``tests/storage/test_contract.py``.

Nothing here knows about HTTP. Names, keys and access rules are checked by the HTTP layer before it calls in;
a backend stores what it is given and reports conflicts with the exceptions below:

    StorageError
     ├── NameNotUnique        a store name the owner already uses (case-insensitive)
     ├── UsernameTaken        a username that exists already
     ├── NotFound             the store, user or token named does not exist
     ├── StorageUnavailable   the database cannot be reached right now (HTTP 503, clients retry)
     ├── StorageFull          no space left, or the storage is read-only: writes are refused (HTTP 507)
     └── StorageDamaged       the database or a record's bytes are damaged or missing: permanent until repaired

Times are timezone-aware UTC ``datetime`` values with millisecond precision.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import schemas

if TYPE_CHECKING:
    from collections.abc import Callable

    from openkvs.storage.bucket import BlobStore
    from openkvs.storage.bucket.admin import FsckReport, MigrateProgress

    from .datasets import DatasetStorage


class StorageError(Exception):
    """Base of every error a backend raises on purpose."""


class NameNotUnique(StorageError):
    """The owner already has a store of that name (names compare without regard to case)."""


class UsernameTaken(StorageError):
    """A user of that name exists already."""


class NotFound(StorageError):
    """The store, user or token the call names does not exist."""


class StorageUnavailable(StorageError):
    """The database is unreachable or restarting; the request may be retried."""


def no_blob_store(what: str) -> StorageUnavailable:
    """The error for bytes that are in a bucket, read by a process started without --blob-store: a 503 like any
    unavailability (the client may retry on another node), but no retry on this one helps, so the log says why
    (``what``: whose bytes)."""
    message = f"{what} in a bucket, but no --blob-store is set (start every node with the same settings)"
    logging.getLogger("openkvs.storage").warning("%s", message)
    return StorageUnavailable(message)


class StorageFull(StorageError):
    """The disk is full (or the data is on a read-only filesystem): this write cannot be stored. Reads go on,
    and deletes too as long as the backend could keep some space for them."""


class StorageDamaged(StorageError):
    """The database or a record's bytes are damaged or missing. Retrying does not help; the message names what
    is damaged, for the log (``openkvs check`` verifies the whole storage)."""


# -- kinds of resources -----------------------------------------------------------------------------------------
# Key-value stores, datasets and request queues share everything a resource has (owner, name unique per owner and
# kind, ID, general access, grants, signing key, times, stats): they are all rows of one table, told apart by kind.
KVS = "kvs"
DATASET = "dataset"
QUEUE = "queue"
KINDS = (KVS, DATASET, QUEUE)


# -- value types -----------------------------------------------------------------------------------------------
# VALUE TYPES: treat them all as immutable. The ones built per request or per record (Store, StoreStats,
# RecordMeta, KeyItem) are not declared frozen, because a frozen dataclass's __init__ sets each field through
# object.__setattr__, about six times the cost: 0.9 us instead of 0.15 us for a Store, paid on every record GET
# and on each of a million records in an archive.


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredTotals:
    """What the whole storage holds (``GET /metrics``): resources and their bytes by kind, and records."""

    resources: dict[str, int]  # by kind (KVS, DATASET, QUEUE)
    bytes: dict[str, int]  # by kind: the resources' storageBytes (as their stats, which may lag a few seconds)
    records: int  # key-value store records


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class StoreStats:
    read_count: int = 0
    write_count: int = 0
    delete_count: int = 0
    list_count: int = 0
    storage_bytes: int = 0
    # Records in a key-value store, kept exact in the transaction of every record write and delete (not a lagging
    # access counter like the four above); 0 for datasets and queues.
    record_count: int = 0


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class Store:
    id: str
    name: str | None
    user_id: str
    username: str
    created_at: datetime
    modified_at: datetime
    accessed_at: datetime
    general_access: str
    schema: dict[str, Any] | None
    url_signing_secret_key: str
    stats: StoreStats = field(default_factory=StoreStats)
    # Bumped in the same transaction as every record write or delete of this store. Two reads that see the same
    # generation see the same records, which is what makes the ZIP ETag strong.
    generation: int = 0
    kind: str = "kvs"  # KVS, DATASET or QUEUE
    title: str | None = None  # datasets' and queues' (the API of key-value stores has none)
    # False for a store of ``list_stores``' page: its schema was not read (``schema`` is None whether or not it has
    # one), since a page of 1,000 stores with schemas at the 4 MiB cap would be 4 GB. ``get_store`` has it.
    schema_read: bool = True


def listed(page: list[Store]) -> list[Store]:
    """A page of ``list_stores``, each store marked as read without its schema (``schema_read`` False): what every
    backend returns."""
    for store in page:
        store.schema_read = False
    return page


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as ``openkvs tokens list`` shows it: never the token, only the start of its SHA-256 to tell tokens
    apart (a hash of 256 random bits gives nothing away)."""

    ID_LENGTH = 12
    username: str
    id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Grant:
    store_id: str
    user_id: str
    username: str
    can_write: bool


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class RecordMeta:
    """One record as stored. ``blob`` is the backend's own handle to the bytes; the HTTP layer passes it back
    to ``read_blob`` and never looks inside."""

    key: str
    content_type: str
    content_encoding: str | None  # as uploaded: gzip, br, deflate, or None for identity
    size: int  # stored (as uploaded, possibly compressed) byte length
    decoded_size: int  # length after undoing content_encoding
    crc32: int  # CRC-32 of the decoded bytes
    modified_at: datetime
    blob: Any = field(repr=False, compare=False)


class StoreMemo:
    """store ID -> (its columns as read, the Store made from them): a look-up whose store row is unchanged reuses
    the Store instead of converting its columns again. Checked against the columns just read, so never stale;
    bounded by count and by the text it holds (a store's schema may be megabytes: schemas.HELD_BYTES); a flood of
    distinct stores starts over."""

    __slots__ = ("_kept", "_held")
    LIMIT = 1024

    def __init__(self) -> None:
        self._kept: dict[Any, tuple[tuple[Any, ...], Store]] = {}
        self._held = 0  # the length of the text columns kept

    def store(self, columns: tuple[Any, ...], make: Callable[[Any], Store], row: Any) -> Store:
        """The Store of ``columns`` (the ID first): the kept one if they read the same, else ``make(row)``."""
        kept = self._kept.get(columns[0])
        if kept is not None and kept[0] == columns:
            return kept[1]
        store = make(row)
        size = _text_length(columns)
        if kept is not None:
            self._held -= _text_length(kept[0])
        if len(self._kept) >= self.LIMIT or self._held + size > schemas.HELD_BYTES:
            self._kept.clear()
            self._held = 0
        if size <= schemas.HELD_BYTES:
            self._kept[columns[0]] = (columns, store)
            self._held += size
        return store


def _text_length(columns: tuple[Any, ...]) -> int:
    return sum(len(c) for c in columns if type(c) is str)


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class StoreLookup:
    """A store as an access decision sees it (``Storage.look_up_store``)."""

    store: Store
    grant: bool | None  # the caller's grant: can_write, or None for no grant
    record: RecordMeta | None = None  # the record asked for, when it was read and exists
    record_read: bool = False  # whether the record was looked up (the caller may read the store)


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class KeyItem:
    key: str
    size: int
    content_type: str = ""  # as stored (the record's Content-Type)


@dataclass(frozen=True, slots=True)
class KeyPage:
    items: list[KeyItem]
    is_truncated: bool


@dataclass(frozen=True, slots=True)
class KeySelection:
    """Which keys a listing or an archive covers: those starting with ``prefix`` (if set) and equal to
    ``exact`` (if set). The HTTP layer folds ``prefix`` and a schema ``collection`` into this."""

    prefix: str | None = None
    exact: str | None = None

    @property
    def whole(self) -> bool:
        """Whether it selects every key (an empty prefix selects all, as in the backends' SQL)."""
        return self.exact is None and not self.prefix


@dataclass(frozen=True, slots=True)
class SnapshotTotals:
    """Aggregates over a snapshot's selection, enough to size an archive without walking it."""

    count: int
    key_bytes: int  # sum of UTF-8 lengths of the keys
    decoded_bytes: int  # sum of decoded sizes
    big_count: int  # entries whose decoded size is 0xFFFFFFFF or more (they need ZIP64 sizes)


class RecordBody(Protocol):
    """A request body on its way in. Iterating yields the stored bytes (as uploaded). While it is iterated it
    decodes, counts and checksums; ``decoded_size`` and ``crc32`` are valid once iteration ended without error.
    Iteration raises (413, a corrupt gzip stream, a client that went away) to abort the write."""

    decoded_size: int
    crc32: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class Snapshot(abc.ABC):
    """A consistent view of one store's records, for the ZIP download. Everything read through it reflects the
    moment it was opened, whatever writers do meanwhile, and every blob it lists stays readable until it closes."""

    generation: int  # the store's generation at the moment of the snapshot
    totals: SnapshotTotals

    @abc.abstractmethod
    def records(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[RecordMeta]]:
        """The selected records in key order (keys greater than ``after``, if given), in batches. A batch may be
        shorter than ``batch`` before the end (backends cap the bytes a batch carries): iterate to the end."""

    @abc.abstractmethod
    def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stored bytes ``[start, end)`` of a record in this snapshot."""

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        """The record's whole decoded bytes if its batch already brought them into memory, else None. Cheap and
        synchronous, so the ZIP writer copies small records without a ``read_blob`` per record."""
        return None

    def zip_entries(self, after: str | None = None, batch: int = 1000) -> AsyncIterator[Sequence[Any]]:
        """The same records as ``records``, with only what the ZIP central directory needs (``key``,
        ``decoded_size``, ``crc32``, ``modified_at``); backends may skip fetching bytes here."""
        return self.records(after, batch)

    def kept_local(self) -> AsyncIterator[Any] | None:
        """For a whole archive's first pass: the batches of ``records()``, some of them replaced by
        ``zipwriter.LocalBlock``s made from headers the backend keeps with the records; None if it keeps none."""
        return None

    def kept_central(self) -> AsyncIterator[Any] | None:
        """The same for the central directory: ``zip_entries()``, some batches as ``zipwriter.CentralBlock``s."""
        return None


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no upper bound), so that a
    prefix selection is the index range ``prefix <= key < bound`` in both backends (LIKE would not use the index
    and would treat ``_`` and ``%`` as wildcards)."""
    chars = list(prefix)
    while chars:
        c = ord(chars.pop())
        if c < 0x10FFFF:
            c += 1
            if 0xD800 <= c <= 0xDFFF:  # surrogates cannot be encoded: skip them
                c = 0xE000
            return "".join(chars) + chr(c)
    return None


# -- the interface ---------------------------------------------------------------------------------------------


class Storage(abc.ABC):
    """A backend. Open it with ``await storage.open()`` (or ``async with``), close it with ``aclose()``.
    Its dataset items are ``storage.datasets`` (storage/datasets.py).

    All methods are coroutines and safe to call concurrently. Several processes may open the same database; a
    backend must stay correct then (writes of one are seen by the others at once)."""

    datasets: DatasetStorage
    blob_store: BlobStore | None = None  # the bucket of big records' bytes (--blob-store), if any

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the tables, start background work (stat flushing, garbage collection)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Flush pending counters, stop background work and close connections."""

    def sample_metrics(self) -> None:  # noqa: B027 - optional hook
        """Set this storage's gauges in openkvs.metrics (connection pools, queues) to their values now; called as
        ``GET /metrics`` is answered."""

    @abc.abstractmethod
    async def stored_totals(self) -> StoredTotals:
        """Counts over everything stored: a scan of the records' index, so the caller keeps the answer a while."""

    async def flush_stats(self) -> None:  # noqa: B027 - optional hook
        """Write the access counters buffered by ``count_access`` now (the background task does this every few
        seconds, ``aclose`` at the end). For tests and orderly shutdown."""

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Create the database or bring its tables to the version this code knows (``open`` does it too); returns
        that version. Works whether the storage is open or closed; safe from several processes at once. Raises
        StorageError for a database newer than this code."""

    async def tables_version(self) -> tuple[int, int]:
        """(the version of the database's tables, the version this code knows), read with one cheap query: the
        readiness check (``GET /health/ready``). Raises StorageError when the database can't be reached."""
        return (0, 0)

    @abc.abstractmethod
    async def drop(self) -> None:
        """Delete every table and record of this storage (for tests; ``migrate`` or ``open`` starts afresh).
        Call it closed."""

    @abc.abstractmethod
    async def collect_garbage(self, now: datetime | None = None, grace: float | None = None) -> int:
        """Reclaim the bytes of replaced and deleted records that no reader can need any more (older than the
        grace period and not held by an open snapshot); returns how many items were reclaimed. The background
        task calls this periodically; ``now`` (an aware datetime) moves time forward and ``grace`` (seconds)
        replaces the configured grace period, for tests."""

    async def check_bucket(self, *, fix: bool = False) -> FsckReport:
        """``openkvs blobs fsck``: compare the bucket (``--blob-store``) with the database: objects no record,
        garbage row or upload names (deleted with ``fix``), and records whose object is missing or of the wrong
        size. Raises ValueError for a storage without a bucket."""
        raise ValueError("openkvs blobs fsck needs --blob-store")

    async def move_record_bytes(
        self, to: str, progress: Callable[[MigrateProgress], None] | None = None
    ) -> MigrateProgress:
        """``openkvs blobs migrate``: move every record's bytes to ``to`` ("bucket": records above the bucket's
        inline_max; "database": all of them), while servers run. Raises ValueError for a storage without a bucket."""
        raise ValueError("openkvs blobs migrate needs --blob-store")

    async def __aenter__(self) -> Storage:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # users and tokens (tokens arrive already hashed: the plain token never reaches storage)

    @abc.abstractmethod
    async def create_user(self, username: str) -> User:
        """Raises UsernameTaken."""

    @abc.abstractmethod
    async def get_user_by_name(self, username: str) -> User | None: ...

    @abc.abstractmethod
    async def add_token(self, user_id: str, token_hash: str) -> None:
        """Raises NotFound for an unknown user."""

    @abc.abstractmethod
    async def user_by_token(self, token_hash: str) -> User | None: ...

    @abc.abstractmethod
    async def revoke_token(self, token_hash: str) -> bool:
        """True if the token existed."""

    @abc.abstractmethod
    async def token_hashes(self, token_id: str) -> list[str]:
        """The hashes of the tokens whose ID (``TokenInfo.id``: the hash's first ``TokenInfo.ID_LENGTH`` characters)
        is ``token_id``: what ``openkvs tokens revoke ID`` revokes, the token itself not being known to an admin."""

    # stores

    @abc.abstractmethod
    async def create_store(
        self, user_id: str, name: str | None, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> Store:
        """Raises NameNotUnique if ``name`` is taken by this user for a resource of this kind (case-insensitive)."""

    @abc.abstractmethod
    async def get_or_create_store(
        self, user_id: str, name: str, schema: dict[str, Any] | None, signing_key: str, *, kind: str = KVS
    ) -> tuple[Store, bool]:
        """The user's resource of that kind and name, or a new one; True when created. Atomic: concurrent calls from any
        number of processes with the same name give one store."""

    @abc.abstractmethod
    async def get_store(self, store_id: str) -> Store | None:
        """A resource of any kind (see ``Store.kind``)."""

    @abc.abstractmethod
    async def get_store_by_name(self, user_id: str, name: str, *, kind: str = KVS) -> Store | None:
        """Case-insensitive."""

    @abc.abstractmethod
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
        """(total, page) of the user's resources of one kind, ordered by creation time. ``unnamed`` False leaves
        out unnamed ones. ``ownership``: ``ownedByMe``, ``sharedWithMe`` (those with a grant for the user) or None
        for both. The page's stores come without their schemas, which are neither read nor parsed (each up to
        4 MiB): ``schema`` None and ``schema_read`` False, whether or not the store has one."""

    @abc.abstractmethod
    async def update_store(self, store_id: str, changes: dict[str, Any]) -> Store:
        """``changes`` may hold ``name``, ``title``, ``general_access``, ``schema``, ``url_signing_secret_key``. Raises
        NotFound, NameNotUnique."""

    @abc.abstractmethod
    async def delete_store(self, store_id: str) -> bool:
        """Deletes the resource with all it holds (records; a kind's own rows go by ON DELETE CASCADE) and its
        grants. True if it existed."""

    # grants (sharing a store with another user)

    @abc.abstractmethod
    async def set_grant(self, store_id: str, user_id: str, can_write: bool) -> None: ...

    @abc.abstractmethod
    async def remove_grant(self, store_id: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    async def list_grants(self, store_id: str) -> list[Grant]: ...

    # administration

    @abc.abstractmethod
    async def list_users(self) -> list[User]:
        """Every user, by username."""

    @abc.abstractmethod
    async def list_tokens(self) -> list[TokenInfo]:
        """Every token, by username and creation time."""

    @abc.abstractmethod
    async def get_grant(self, store_id: str, user_id: str) -> Grant | None: ...

    async def user_grants(self, user_id: str, store_ids: Sequence[str]) -> dict[str, Grant]:
        """The grants ``user_id`` holds on any of ``store_ids``, by store ID: for a listing of stores, one query
        instead of one per store. A backend overrides it; this is the same through get_grant."""
        found = {}
        for store_id in dict.fromkeys(store_ids):
            grant = await self.get_grant(store_id, user_id)
            if grant is not None:
                found[store_id] = grant
        return found

    # records

    @abc.abstractmethod
    async def put_record(
        self, store_id: str, key: str, body: RecordBody, content_type: str, content_encoding: str | None
    ) -> RecordMeta:
        """Streams ``body`` into storage and then, atomically, makes it the record ``key``. If iterating the
        body raises, nothing is left behind and the old record (if any) stays. Bumps the store's generation and
        modifiedAt, and its record count when the key is new, in the same transaction. Durable against a crash of
        the process once it returns. Raises NotFound for a missing store."""

    @abc.abstractmethod
    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        """The blob of the returned record stays readable for at least a grace period (a minute) even if the
        record is replaced or deleted meanwhile, so a ``read_blob`` that follows always succeeds."""

    async def look_up_store(
        self,
        user_id: str | None,
        *,
        store_id: str | None = None,
        owner_id: str | None = None,
        name: str | None = None,
        key: str | None = None,
        readable: Sequence[str] = (),
        kind: str = KVS,
    ) -> StoreLookup | None:
        """What an access decision needs, in one query: the resource of ``kind`` with ID ``store_id`` (or the one
        named ``name`` of ``owner_id``, case-insensitive; one of another kind is not found), the grant ``user_id``
        holds on it, and its record ``key`` if ``user_id`` may read the store (its owner, a grant, or a
        ``general_access`` in ``readable``: the levels that let the store's address read). Else the
        record is not touched: whether a signature opens it is decided after. None for a missing store. A
        backend overrides this with one query; this is the same through the others."""
        if store_id is not None:
            store = await self.get_store(store_id)
        else:
            store = await self.get_store_by_name(owner_id or "", name or "", kind=kind)
        if store is None or store.kind != kind:
            return None
        grant = await self.get_grant(store.id, user_id) if user_id is not None and user_id != store.user_id else None
        found = StoreLookup(store, grant.can_write if grant is not None else None)
        if key is not None and (
            (user_id is not None and store.user_id == user_id) or grant is not None or store.general_access in readable
        ):
            found.record = await self.get_record(store.id, key)
            found.record_read = True
        return found

    @abc.abstractmethod
    def read_blob(self, record: RecordMeta, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stored bytes ``[start, end)`` of a record returned by ``get_record``, in chunks of up to 1 MiB."""

    def held_bytes(self, record: RecordMeta) -> bytes | None:
        """All stored bytes of a record when ``get_record`` already brought them along (a small record), so a
        response needs no ``read_blob``; None otherwise."""
        return None

    @abc.abstractmethod
    async def delete_record(self, store_id: str, key: str) -> bool:
        """True if the record existed. Bumps generation and modifiedAt, and lowers the record count, only then."""

    @abc.abstractmethod
    async def list_keys(
        self, store_id: str, selection: KeySelection, exclusive_start_key: str | None, limit: int
    ) -> KeyPage:
        """Up to ``limit`` keys greater than ``exclusive_start_key``, in key (byte) order. O(limit)."""

    @abc.abstractmethod
    def snapshot(self, store_id: str, selection: KeySelection) -> AbstractAsyncContextManager[Snapshot]:
        """A consistent view of the selected records (see Snapshot). Raises NotFound for a missing store."""

    # stats (counted in memory by the caller's process, written in batches, never on the read path)

    @abc.abstractmethod
    def count_access(self, store_id: str, *, reads: int = 0, writes: int = 0, deletes: int = 0, lists: int = 0) -> None:
        """Record an access in memory and move ``accessedAt``; flushed to the database every few seconds and
        at ``aclose``. Never blocks."""
