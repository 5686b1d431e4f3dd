"""Who may do what with a resource (API.md section 5), decided in one place.

A handler calls ``decide()`` once: with the request, the kind of resource (``STORES``; datasets and request queues
have the same access model and get a row of their own in the same shape), the address from the path (an ID,
``~name`` or ``username~name``), the level it needs and the signature rule that may stand in for read access. It
gets back the resource and the caller's right, or the contract's error, always in this order:

1. an unknown token: 401 token-not-valid (the guess is charged to the client's IP);
2. an address no resource can have: 404 (``~name`` without a token: 401 token-not-provided);
3. no such resource: 404 (the probe is charged to the caller);
4. the request is charged to the caller's and the resource's budgets (429 when spent);
5. a record key that is not valid: 400;
6. not enough access, unless the signature stands in: a resource addressed by name that the caller can't see
   at all is 404 (names of private stores don't leak), else 403 for a known user or a given signature, else 401.

One storage query answers steps 3 to 6 (``Storage.look_up_store``: the resource, the caller's grant, and the
record the request names when the caller may read it).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

from openkvs import errors, rules, signing
from openkvs.api.common import (
    check_key,
    limits_off,
    rate_limit,
    rate_limit_now,
    raw_headers,
)
from openkvs.auth import token_from_request
from openkvs.storage.base import DATASET, KVS, QUEUE, RecordMeta, Storage, Store, StoreLookup, User


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2
    OWNER = 3  # everything: also deleting the resource, sharing it and rotating its signing key


# -- addresses ---------------------------------------------------------------------------------------------------


class By(enum.Enum):
    ID = "id"
    USERNAME_NAME = "username~name"
    OWN_NAME = "~name"

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is a Python call, on every request


# The members the per-request code names, as module constants: in Python 3.11 an enum class's attributes go
# through EnumType.__getattr__'s slower hook (about 0.35 us each, ten times a global name), several per request.
_ID, _OWN_NAME, _USERNAME_NAME = By.ID, By.OWN_NAME, By.USERNAME_NAME
_NONE, _READ, _OWNER = Access.NONE, Access.READ, Access.OWNER


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class Address:
    """How the path named a resource."""

    by: By
    value: str  # the ID, or the resource's name
    username: str | None = None


def parse_address(raw: str) -> Address:
    if "~" not in raw:
        return Address(_ID, raw)
    username, _, name = raw.partition("~")
    if not username:
        return Address(_OWN_NAME, name)
    return Address(_USERNAME_NAME, name, username)


# -- the rules ---------------------------------------------------------------------------------------------------


def general_access_level(mode: str, by: By, default_general_access: str) -> Access:
    """The read access everyone has through ``generalAccess`` (never write)."""
    if mode == rules.FOLLOW_USER_SETTING:
        mode = default_general_access
    if mode == rules.ANYONE_WITH_ID_CAN_READ and by is _ID:
        return _READ
    if mode == rules.ANYONE_WITH_NAME_CAN_READ and (by is _ID or by is _USERNAME_NAME):
        return _READ
    return _NONE


@functools.cache
def readable_levels(by: By, default_general_access: str) -> tuple[str, ...]:
    """The ``generalAccess`` values that let anyone read a resource addressed this way: what storage needs to
    decide, inside its one query, whether to read the record too. Derived from the rule above, not restated."""
    return tuple(m for m in rules.GENERAL_ACCESS if general_access_level(m, by, default_general_access) >= Access.READ)


def right_of(resource: Store, user: User | None, grant: bool | None, general: Access = Access.NONE) -> Access:
    """The caller's right: the owner may do everything, a grant gives read or read+write (``grant`` is its
    can_write, None for none), and ``generalAccess`` may give anyone read."""
    if user is not None and resource.user_id == user.id:
        return _OWNER
    if grant is None:
        return general
    return max(Access.WRITE if grant else _READ, general)


def deny(user: User | None, signature_given: bool) -> errors.ApiError:
    """The error for a caller who lacks the access needed: 403 for a known user or a bad signature, else 401."""
    if user is not None or signature_given:
        return errors.PermissionDenied()
    return errors.TokenNotProvided()


class Signed(enum.Enum):
    """An endpoint's signature rule: which signature in the ``signature`` query parameter stands for read
    access (API.md 5.3)."""

    CONTENT = "content"  # the content signature of the resource (its key listing, its archive)
    RECORD = "record"  # the record signature of the key the request names (that record's GET/HEAD)


_CONTENT = Signed.CONTENT  # (see _ID above)


def signature_valid(rule: Signed, resource: Store, key: str | None, signature: str | None) -> bool:
    if not signature:
        return False
    secret = resource.url_signing_secret_key
    if rule is _CONTENT:
        return signing.verify_content_signature(secret, resource.id, signature)
    return key is not None and signing.verify_record_signature(secret, key, signature)


# -- kinds of resources ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How to find one kind of resource; everything else about access is the same for every kind."""

    name: str
    storage_kind: str  # the ``kind`` of its rows in storage (storage.base.KVS, DATASET, QUEUE)
    not_found: str  # the message of its 404
    # The Storage method that gives the resource, the caller's grant and the item ``key`` in one query, with the
    # parameters of Storage.look_up_store.
    look_up: str
    plausible_id: Callable[[str], bool]  # whether an ID could be one (else 404 without asking storage)
    valid_key: Callable[[str], bool]  # whether an item key (a record's) could be one; ``check_key`` says why not
    check_key: Callable[[str], object]


def _remembered(rule: rules.Rule, size: int = 4096) -> Callable[[str], bool]:
    """``rule.ok`` with its verdicts remembered: the same store IDs and keys come back request after request, and
    a regex match costs more than a cache lookup. Bounded in entries (least recently used out) and in size: a
    text longer than the rule allows fails without being kept."""
    remembered = functools.lru_cache(maxsize=size)(rule.ok)
    longest = rule.max_length

    def ok(text: str) -> bool:
        return len(text) <= longest and remembered(text)

    return ok


def _no_keys(key: str) -> object:
    raise AssertionError("this kind of resource has no record keys")


_plausible_id = _remembered(rules.STORE_ID)  # IDs of every kind are made alike (storage/ids.py)
STORES = Kind(
    "key-value store", KVS, errors.NotFound.default_message, "look_up_store", _plausible_id,
    _remembered(rules.RECORD_KEY), check_key,
)
DATASETS = Kind("dataset", DATASET, "Dataset was not found", "look_up_store", _plausible_id, bool, _no_keys)
QUEUES = Kind("request queue", QUEUE, "Request queue was not found", "look_up_store", _plausible_id, bool, _no_keys)
KINDS = (STORES, DATASETS, QUEUES)


def plausible(kind: Kind, address: Address) -> bool:
    """Whether a resource could have this address: an ID as the kind's are, names and usernames by their rules."""
    if address.by is _ID:
        return kind.plausible_id(address.value)
    if not rules.STORE_NAME.ok(address.value):
        return False
    return address.by is _OWN_NAME or rules.USERNAME.ok(address.username or "")


async def find(storage: Storage, kind: Kind, raw: str, owner: User | None = None) -> Store | None:
    """The resource at an address, with no access decided (the command line's ``openkvs grants add ID``):
    ``~name`` needs ``owner``."""
    address = parse_address(raw)
    if not plausible(kind, address) or (address.by is _OWN_NAME and owner is None):
        return None
    found = await _look_up(storage, kind, address, owner, owner, None, ())
    return found.store if found is not None else None


def _look_up(storage: Storage, kind: Kind, address: Address, user: User | None, owner: User | None,
             key: str | None, readable: Sequence[str]) -> Awaitable[StoreLookup | None]:
    """Ask storage; ``owner`` is whose ``~name`` it is (the caller). By ID, storage's own coroutine (no wrapper
    around the common case)."""
    user_id = user.id if user is not None else None
    look_up: Callable[..., Awaitable[StoreLookup | None]] = getattr(storage, kind.look_up)
    if address.by is _ID:
        return look_up(user_id, store_id=address.value, key=key, readable=readable, kind=kind.storage_kind)
    return _look_up_by_name(storage, look_up, kind, address, user_id, owner, key, readable)


async def _look_up_by_name(storage: Storage, look_up: Callable[..., Awaitable[StoreLookup | None]], kind: Kind,
                           address: Address, user_id: str | None, owner: User | None, key: str | None,
                           readable: Sequence[str]) -> StoreLookup | None:
    if address.by is _USERNAME_NAME:
        owner = await storage.get_user_by_name(address.username or "")
        if owner is None:
            return None
    assert owner is not None
    return await look_up(user_id, owner_id=owner.id, name=address.value, key=key, readable=readable,
                         kind=kind.storage_kind)


# -- the caller and the decision ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _bearer(authorization: bytes) -> str | None:
    """``token_from_request`` of an ``Authorization`` header alone: remembered, the same few headers come with
    request after request (and its decoding and parsing cost more than the lookup)."""
    return token_from_request(authorization.decode("latin-1"), None)


def _token(request: Request) -> str | None:
    """The request's API token: from ``Authorization: Bearer``, else the ``token`` query parameter."""
    authorization = raw_headers(request).get(b"authorization")
    if authorization is not None and len(authorization) <= 256 and not request.scope["query_string"]:
        return _bearer(authorization)  # (bounded: up to 1024 short headers remembered)
    return token_from_request(
        authorization.decode("latin-1") if authorization is not None else None,
        request.query_params.get("token") if request.scope["query_string"] else None,
    )


def known_caller(request: Request) -> tuple[User | None] | None:
    """``(caller,)`` when it is known without a coroutine (no token, or a token the cache knows), else None."""
    authorization = raw_headers(request).get(b"authorization")
    if authorization is not None and len(authorization) <= 256 and not request.scope["query_string"]:
        token = _bearer(authorization)  # _token's common case, without its call
    else:
        token = _token(request)
    if token is None:
        return (None,)
    hit: tuple[User | None] | None = request.scope["state"]["openkvs"].tokens.cached(token)
    return hit if hit is not None and hit[0] is not None else None


async def caller(request: Request) -> User | None:
    """The user the request's token names, None without a token; 401 token-not-valid for an unknown token."""
    known = known_caller(request)
    if known is not None:
        request.scope["openkvs.user"] = known[0]  # the access log's user id
        return known[0]
    token = _token(request)
    user = await request.scope["state"]["openkvs"].tokens.user(token)
    if user is None:
        await rate_limit(request.scope, None, None, record_op=False)  # guesses count against the IP
        raise errors.TokenNotValid()
    request.scope["openkvs.user"] = user  # the access log's user id
    return user


def require_user(user: User | None) -> User:
    if user is None:
        raise errors.TokenNotProvided()
    return user


async def signed_in(request: Request) -> User:
    """For what needs a user but no resource (listing and creating stores): the caller, charged to its budget."""
    user = request.scope["openkvs.user"] = require_user(await caller(request))
    await rate_limit(request.scope, user, None, record_op=False)
    return user


@dataclass(slots=True)  # not frozen: see VALUE TYPES in storage/base.py
class Decision:
    """What ``decide`` found: the resource and the caller's right to it (at least the level asked for, or READ
    through a signature)."""

    store: Store  # the resource (a key-value store)
    access: Access
    user: User | None
    record: RecordMeta | None = None  # the record named by ``key``, if ``record_read`` and it exists
    record_read: bool = False  # whether ``record`` is the answer (else the caller asks storage: a signed read)


async def decide(
    request: Request,
    kind: Kind,
    raw: str,
    level: Access,
    signature: Signed | None = None,
    *,
    key: str | None = None,
    fetch: bool = False,
    budget: str | None = None,
) -> Decision:
    """The resource at the address ``raw`` and the caller's right to it, or the error (see the module docstring
    for the order). ``key``: the item the request names (a record: charged to the record budget, and its key
    checked); ``fetch``: read it in the same query when the caller may read the resource; ``budget``: the named
    per-resource rate budget the request spends from instead (api/common.py ``budgets``)."""
    scope = request.scope
    known = known_caller(request)
    user = scope["openkvs.user"] = known[0] if known is not None else await caller(request)
    if "~" not in raw:  # parse_address's first case, without making an Address (most requests name an ID)
        by = _ID
        address = None
    else:
        address = parse_address(raw)
        by = address.by
    if not (kind.plausible_id(raw) if address is None else plausible(kind, address)):
        if by is _OWN_NAME:
            require_user(user)
        raise errors.NotFound(kind.not_found)  # no resource can have it, so don't ask the database (a NUL: a 500)
    st = scope["state"]["openkvs"]
    default = st.settings.default_general_access
    good_key = key is not None and kind.valid_key(key)
    readable = readable_levels(by, default)
    wanted = key if fetch and good_key else None
    if by is _ID:  # storage's own coroutine, no wrapper around the common case
        found = await getattr(st.storage, kind.look_up)(
            user.id if user is not None else None, store_id=raw, key=wanted, readable=readable,
            kind=kind.storage_kind,
        )
    else:
        assert address is not None
        owner = require_user(user) if by is _OWN_NAME else None
        found = await _look_up(st.storage, kind, address, user, owner, wanted, readable)
    if found is None:
        await rate_limit(scope, user, None, record_op=False)  # probing resources costs the caller
        raise errors.NotFound(kind.not_found)
    resource = found.store
    if user is not None and resource.user_id == user.id:
        access = _OWNER  # right_of's first rule, without its call: the owner's own requests are most
    else:
        access = right_of(resource, user, found.grant, general_access_level(resource.general_access, by, default))
    if st.limits is None:
        limits_off(scope, resource.id, key is not None, budget)  # rate limits off, without a coroutine
    elif not rate_limit_now(scope, user, resource.id, key is not None, budget):  # in memory, without one
        await rate_limit(scope, user, resource.id, record_op=key is not None, budget=budget)
    if key is not None and not good_key:
        kind.check_key(key)
    if access < level and not (
        level is _READ
        and signature is not None
        and signature_valid(signature, resource, key, request.query_params.get("signature"))
    ):
        if access is _NONE and by is not _ID:
            raise errors.NotFound(kind.not_found)  # addressed by name and not the caller's to see: don't reveal it
        raise deny(user, bool(request.query_params.get("signature")))
    return Decision(resource, access, user, found.record, found.record_read)
