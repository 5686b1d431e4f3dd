"""Request queues in storage: the interface both backends implement (``QueueStorage``, a base of both backend
classes beside ``Storage``: ``queue_storage(storage)`` gives it to the HTTP layer),
the value types, and the rules of head order and locks (API-request-queues.md sections 6, 7 and 9), written once
here as small pure functions so that SQLite and PostgreSQL cannot disagree on them.

A queue is a row of ``stores`` (kind ``queue``); its requests are rows keyed by (queue ID, request ID), where the
request ID is derived from ``uniqueKey`` by the HTTP layer (``openkvs/requestids.py``). Each pending request has a
*placement*, two signed integers that sort it in head order:

    front-placed:  (-time, -seq)     back-placed:  (+time, +seq)

``time`` is the placement's time in milliseconds and ``seq`` a per-queue counter that grows with every placement.
In ascending order the front-placed requests come first, the most recently placed first, then the back-placed
ones, the earliest first: exactly the contract's head order. A handled request has no placement (NULL).

A lock is a placement in the future: taking or prolonging a lock places the request at its expiry (on the side the
contract fixes) and notes the owner. So "locked" is ``abs(time) > now``, and a lock that lapses needs no write:
at that instant the request simply is placed where the contract says it goes. The available requests of a queue
are then two index ranges, ``-now <= time < 0`` and ``0 < time <= now``, and the head is read from an index without
stepping over handled or locked requests, however many there are (issue 14: the head of a million costs what the
head of a thousand does). Every placement's time is at most ``now``, so a placement is never mistaken for a lock.

Times come from one clock: SQLite's process clock (one machine), PostgreSQL's ``clock_timestamp()`` (all nodes);
a backend's ``queue_clock`` (milliseconds since the epoch) replaces it in tests.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from .base import StorageError

# The request bodies of one listing page (5.7) stop once they hold this many bytes (the first request always comes):
# a page of 10,000 requests of 2 MB was 19 GB to hold and join. Pages of ordinary requests (1-2 kB each) never
# come near it; a cut page has a nextCursor, as the contract allows (only the last page is empty). A head (5.11)
# stops at it too, counting uniqueKey and url (up to 65,535 bytes each: 1,000 heads were 131 MB): a head of fewer
# than ``limit`` requests is what a client also sees when others hold locks, and it asks again.
LIST_PAGE_BYTES = 16 * 1024 * 1024


def utf8_len(text: str) -> int:
    """The bytes of ``text`` in UTF-8, as PostgreSQL's ``octet_length`` counts them: every backend measures
    LIST_PAGE_BYTES the same way (SQLite has no ``octet_length`` before 3.43). An ASCII string's length without a
    copy (``isascii`` reads a flag of the string)."""
    return len(text) if text.isascii() else len(text.encode())


NO_KEY = ""  # the owner of locks taken without a clientKey (a clientKey has 1 to 32 characters, so never this)


class QueueError(StorageError):
    """A queue operation refused for the state of one request."""


class RequestNotFound(QueueError):
    """The queue has no request of that ID."""


class RequestHandledOrLocked(QueueError):
    """A prolong or delete of a lock refused; the message is the contract's."""

    HANDLED = "Request was already handled."
    LOCKED = "Request is locked by another client."


@dataclass(slots=True)
class NewRequest:
    """A request as the HTTP layer validated it: the columns storage indexes or shows in heads, and ``body``, the
    JSON text of the whole request as stored (section 3: without ``id``)."""

    id: str
    unique_key: str
    url: str
    method: str
    retry_count: int
    handled: bool
    body: str


@dataclass(slots=True)
class StoredRequest:
    id: str
    body: str  # the stored JSON text, without id
    lock_expires_at: datetime | None  # set while a live lock exists


@dataclass(slots=True)
class HeadItem:
    id: str
    unique_key: str
    url: str
    method: str
    retry_count: int
    lock_expires_at: datetime | None = None  # head/lock items only


@dataclass(slots=True)
class QueueHead:
    items: list[HeadItem]
    modified_at: datetime
    had_multiple_clients: bool
    has_locked: bool = False  # head/lock: whether any request has a live lock after the call


@dataclass(slots=True)
class QueueCounts:
    total: int = 0
    handled: int = 0
    had_multiple_clients: bool = False

    @property
    def pending(self) -> int:
        return self.total - self.handled


@dataclass(slots=True)
class Registration:
    """One request's answer to an add, batch add or update."""

    request_id: str
    was_already_present: bool
    was_already_handled: bool


# -- the rules (pure) ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class QueueState:
    """The per-queue row: counters, the placement sequence and the first client (section 7). Read and written
    back once by every write transaction, which therefore also serialises the writers of one queue."""

    total: int = 0
    handled: int = 0
    next_seq: int = 1
    first_client: str | None = None  # None: no counting call yet; NO_KEY: the first had no clientKey
    had_multiple_clients: bool = False

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def note_client(self, client_key: str | None) -> bool:
        """Section 7 for one counting call; True if the state changed."""
        if self.first_client is None:
            self.first_client = NO_KEY if client_key is None else client_key
            return True
        if not self.had_multiple_clients and (client_key is None or client_key != self.first_client):
            self.had_multiple_clients = True
            return True
        return False


@dataclass(slots=True)
class Slot:
    """A request's place: ``time``/``seq`` as in the module docstring (None: handled), and the owner of its lock
    (meaningful only while ``abs(time) > now``)."""

    time: int | None
    seq: int | None
    owner: str | None

    @property
    def handled(self) -> bool:
        return self.time is None

    def locked(self, now: int) -> bool:
        return self.time is not None and abs(self.time) > now

    def held_by_other(self, now: int, client_key: str | None) -> bool:
        return self.locked(now) and self.owner != owner_of(client_key)

    @property
    def front(self) -> bool:
        return self.time is not None and self.time < 0


def owner_of(client_key: str | None) -> str:
    return NO_KEY if client_key is None else client_key


def placed(state: QueueState, at: int, forefront: bool, owner: str | None = None) -> Slot:
    """A placement at time ``at`` (now, or a lock's expiry) on the given side, with the next sequence number."""
    seq = state.take_seq()
    return Slot(-at, -seq, owner) if forefront else Slot(at, seq, owner)


def after_update(
    old: Slot | None, handled: bool, state: QueueState, now: int, forefront: bool, client_key: str | None
) -> Slot:
    """Section 5.9: where a request stands after an update (or an upsert when ``old`` is None), and the counters
    moved accordingly."""
    was_handled = old is not None and old.handled
    if old is None:
        state.total += 1
    if handled and not was_handled:
        state.handled += 1
    elif not handled and was_handled:
        state.handled -= 1
    if handled:
        return Slot(None, None, None)
    if old is not None and old.held_by_other(now, client_key):
        return old  # another client's live lock stays (section 9 rule 3); the new content applies
    return placed(state, now, forefront)


def to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LOCK_SECS = 86_400


# -- the interface ---------------------------------------------------------------------------------------------


def queue_storage(storage: object) -> QueueStorage:
    """The queue methods of a backend (every backend implements them; a test's wrapper that forwards them is
    taken as it is)."""
    return cast(QueueStorage, storage)


class QueueStorage(abc.ABC):
    """What a backend stores for request queues. ``queue_id`` is a store ID (the HTTP layer has checked it names
    a queue); a missing queue raises ``NotFound``. Every write is one transaction; every call that takes
    ``client_key`` and is carried out counts as a client (section 7: a refused call, RequestNotFound or
    RequestHandledOrLocked, leaves no trace). Stats are the caller's (``count_access``)."""

    queue_clock: Callable[[], int] | None = None  # tests: milliseconds since the epoch, instead of the real clock

    @abc.abstractmethod
    async def queue_counts(self, queue_ids: Sequence[str]) -> dict[str, QueueCounts]:
        """The counters of each queue (a queue never written to has zeros)."""

    @abc.abstractmethod
    async def add_requests(
        self, queue_id: str, requests: Sequence[NewRequest], *, forefront: bool, client_key: str | None
    ) -> list[Registration]:
        """5.4/5.5: in order, atomically; an existing ID changes nothing."""

    @abc.abstractmethod
    async def get_request(self, queue_id: str, request_id: str) -> StoredRequest | None: ...

    @abc.abstractmethod
    async def update_request(
        self, queue_id: str, request: NewRequest, *, forefront: bool, client_key: str | None
    ) -> Registration:
        """5.9: replace (or create) the request."""

    @abc.abstractmethod
    async def delete_requests(
        self, queue_id: str, request_ids: Sequence[str], *, client_key: str | None
    ) -> list[str | None]:
        """5.6/5.10: the stored uniqueKey of each deleted request (None: there was none)."""

    @abc.abstractmethod
    async def list_requests(
        self,
        queue_id: str,
        *,
        after: str | None,
        limit: int,
        pending: bool = True,
        locked: bool = True,
        handled: bool = True,
        client_key: str | None,
    ) -> tuple[list[StoredRequest], bool]:
        """5.7: up to ``limit`` requests with IDs above ``after`` in ascending ID order that are in one of the
        chosen states, fewer once their bodies reach LIST_PAGE_BYTES (one at least); True when more follow."""

    @abc.abstractmethod
    async def queue_head(self, queue_id: str, *, limit: int, client_key: str | None) -> QueueHead:
        """5.11: the first ``limit`` available requests, nothing locked; fewer once their uniqueKeys and urls
        reach LIST_PAGE_BYTES (one at least)."""

    @abc.abstractmethod
    async def lock_head(self, queue_id: str, *, limit: int, lock_secs: int, client_key: str | None) -> QueueHead:
        """5.12: take and lock the first ``limit`` available requests."""

    @abc.abstractmethod
    async def prolong_lock(
        self, queue_id: str, request_id: str, *, lock_secs: int, forefront: bool, client_key: str | None
    ) -> datetime:
        """5.13; raises RequestNotFound, RequestHandledOrLocked. Returns the new lockExpiresAt."""

    @abc.abstractmethod
    async def delete_lock(self, queue_id: str, request_id: str, *, forefront: bool, client_key: str | None) -> bool:
        """5.14; raises RequestNotFound, RequestHandledOrLocked. True if a live lock was deleted (else nothing
        changed: the request was not locked)."""

    @abc.abstractmethod
    async def unlock_requests(self, queue_id: str, *, client_key: str | None) -> int:
        """5.15: free every live lock of ``client_key``; how many."""
