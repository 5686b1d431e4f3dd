"""Who is calling: tokens (API.md 5.1). What a caller may do is openkvs/access.py.

Tokens are random (240 bits), stored only as SHA-256 hashes, and looked up by hash, so comparing them is a
constant-time dictionary/index lookup on a hash rather than a comparison of secrets. A small in-process cache
keeps the token lookup off the hot path; a revoked token stops working within ``TOKEN_CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from openkvs.storage.base import Storage, User

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
