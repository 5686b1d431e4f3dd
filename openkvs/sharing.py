"""Taking access back also ends the signed links that access could hand out.

Whoever may read a store receives ``keysPublicUrl``/``recordsPublicUrl`` (valid 14 days) and record URLs whose
signature never expires; whoever may write it also receives ``urlSigningSecretKey`` and can mint any of them.
A signature is checked against the store's current key only, so the one way to void the links a reader kept is a
new key. With ``--rotate-signing-key-on-revoke`` (on by default) these changes rotate it:

- a grant removed, or lowered from WRITE to READ (the writer saw the key itself);
- ``generalAccess`` changed so that nobody without a token may read the store any more (RESTRICTED, or
  FOLLOW_USER_SETTING while the server's default is RESTRICTED).

The rotation voids every signed link of the store, also those the owner handed out on purpose: the owner shares
again from the new store object. Used by the API and the command line alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from openkvs import auth, rules
from openkvs.storage.base import Storage, Store

T = TypeVar("T")
ROTATE = "url_signing_secret_key"  # the store field a rotation changes


def effective_general_access(general_access: str, default_general_access: str) -> str:
    return default_general_access if general_access == "FOLLOW_USER_SETTING" else general_access


def restricts(store: Store, changes: dict[str, Any], default_general_access: str) -> bool:
    """Whether ``changes`` (to ``update_store``) close a store that anyone could read to everyone without a token."""
    if "general_access" not in changes:
        return False
    before = effective_general_access(store.general_access, default_general_access)
    after = effective_general_access(changes["general_access"], default_general_access)
    return before != rules.RESTRICTED and after == rules.RESTRICTED


def with_rotation(store: Store, changes: dict[str, Any], default_general_access: str, rotate: bool) -> dict[str, Any]:
    """``changes`` plus a new signing key when they restrict the store: one write, so no link outlives it."""
    if rotate and restricts(store, changes, default_general_access):
        return {**changes, ROTATE: auth.new_signing_key()}
    return changes


async def remove_grant(storage: Storage, store_id: str, user_id: str, rotate: bool) -> bool:
    """Take a grant back; True if there was one. Rotates the signing key when one was removed."""
    grant = await storage.get_grant(store_id, user_id)
    if grant is None:
        return False
    return await _rotating(storage, store_id, rotate, lambda: storage.remove_grant(store_id, user_id))


async def set_grant(storage: Storage, store_id: str, user_id: str, can_write: bool, rotate: bool) -> None:
    """Add or change a grant. Lowering WRITE to READ rotates the signing key: the writer knew it."""
    before = await storage.get_grant(store_id, user_id)
    lowered = before is not None and before.can_write and not can_write
    await _rotating(storage, store_id, rotate and lowered, lambda: storage.set_grant(store_id, user_id, can_write))


async def _rotating(storage: Storage, store_id: str, rotate: bool, change: Callable[[], Awaitable[T]]) -> T:
    if not rotate:
        return await change()
    # Before the change: if the change then fails, the caller's retry still finds the grant and rotates again,
    # and no old link is left alive meanwhile. After it: a link the grantee fetched in between (with the key of
    # the first rotation, while still granted) dies too.
    await storage.update_store(store_id, {ROTATE: auth.new_signing_key()})
    result = await change()
    await storage.update_store(store_id, {ROTATE: auth.new_signing_key()})
    return result
