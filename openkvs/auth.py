"""Who is calling, and what they may do with a store (API.md section 5).

Tokens are random (240 bits), stored only as SHA-256 hashes, and looked up by hash, so comparing them is a
constant-time dictionary/index lookup on a hash rather than a comparison of secrets. A small in-process cache
keeps the token lookup off the hot path; a revoked token stops working within ``TOKEN_CACHE_SECONDS``.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from dataclasses import dataclass

from openkvs import errors, rules, signing
from openkvs.storage.base import Storage, Store, User

TOKEN_PREFIX = "okvs_"
TOKEN_CACHE_SECONDS = 5.0
_CACHE_MAX = 10_000


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(30)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_signing_key() -> str:
    return secrets.token_urlsafe(24)


class TokenCache:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._cache: dict[str, tuple[float, User | None]] = {}

    def cached(self, token: str) -> tuple[User | None] | None:
        """``(user,)`` (None for an unknown token) while the cache holds a fresh answer, else None: the common
        case without a coroutine."""
        hit = self._cache.get(token)
        if hit is not None and hit[0] > time.monotonic():
            return (hit[1],)
        return None

    async def user(self, token: str) -> User | None:
        # Keyed by the token itself: hashing is needed only to ask storage, on a miss.
        hit = self.cached(token)
        if hit is not None:
            return hit[0]
        user = await self._storage.user_by_token(hash_token(token))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (time.monotonic() + TOKEN_CACHE_SECONDS, user)
        return user


def token_from_request(authorization: str | None, query_token: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2


class By(enum.Enum):
    ID = "id"
    USERNAME_NAME = "username~name"
    OWN_NAME = "~name"


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class Address:
    """How the path named a store."""

    by: By
    value: str  # the ID, or the store name
    username: str | None = None


def parse_store_address(raw: str) -> Address:
    if "~" not in raw:
        return Address(By.ID, raw)
    username, _, name = raw.partition("~")
    if not username:
        return Address(By.OWN_NAME, name)
    return Address(By.USERNAME_NAME, name, username)


def general_access_level(store: Store, address: Address, default_general_access: str) -> Access:
    """The read access everyone has through ``generalAccess`` (never write)."""
    mode = store.general_access
    if mode == rules.FOLLOW_USER_SETTING:
        mode = default_general_access
    if mode == rules.ANYONE_WITH_ID_CAN_READ and address.by is By.ID:
        return Access.READ
    if mode == rules.ANYONE_WITH_NAME_CAN_READ and address.by in (By.ID, By.USERNAME_NAME):
        return Access.READ
    return Access.NONE


def owner_access(store: Store, user: User | None) -> Access | None:
    """What ``user_access`` answers when no grant has to be looked up (no user, or the owner), else None."""
    if user is None:
        return Access.NONE
    if store.user_id == user.id:
        return Access.WRITE
    return None


async def user_access(storage: Storage, store: Store, user: User | None) -> Access:
    known = owner_access(store, user)
    if known is not None:
        return known
    assert user is not None
    grant = await storage.get_grant(store.id, user.id)
    if grant is None:
        return Access.NONE
    return Access.WRITE if grant.can_write else Access.READ


def check_content_signature(store: Store, signature: str | None) -> bool:
    return bool(signature) and signing.verify_content_signature(store.url_signing_secret_key, store.id, signature)


def check_record_signature(store: Store, key: str, signature: str | None) -> bool:
    return bool(signature) and signing.verify_record_signature(store.url_signing_secret_key, key, signature)


def deny(user: User | None, signature_given: bool) -> errors.ApiError:
    """The error for a caller who lacks the access needed: 403 for a known user or a bad signature, else 401."""
    if user is not None or signature_given:
        return errors.PermissionDenied()
    return errors.TokenNotProvided()
