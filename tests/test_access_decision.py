"""openkvs.access, in process: the rules, and ``decide()`` giving the contract's errors in the pinned order with
the rate-limit charges of each step, on both backends. The full matrix over the wire is tests/api/test_access.py."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from openkvs import access, auth, errors, rules, signing
from openkvs.access import STORES, Access, By, Signed
from openkvs.api.common import ApiRequest, AppState
from openkvs.config import Settings
from openkvs.ratelimit.policy import Verdict
from openkvs.storage.base import Storage

from .inprocess import app_client
from .storage.conftest import Body, storage  # noqa: F401 - the fixture, over both backends

pytestmark = pytest.mark.anyio

GENERAL_ACCESS = rules.GENERAL_ACCESS


# -- the rules -------------------------------------------------------------------------------------------------


def test_addresses() -> None:
    assert access.parse_address("abc") == access.Address(By.ID, "abc")
    assert access.parse_address("~mine") == access.Address(By.OWN_NAME, "mine")
    assert access.parse_address("bob~his") == access.Address(By.USERNAME_NAME, "his", "bob")


def test_general_access_opens_reads_by_the_address_it_names() -> None:
    read, none = Access.READ, Access.NONE
    level = access.general_access_level
    assert [level("ANYONE_WITH_ID_CAN_READ", by, "RESTRICTED") for by in By] == [read, none, none]
    assert [level("ANYONE_WITH_NAME_CAN_READ", by, "RESTRICTED") for by in By] == [read, read, none]
    assert [level("RESTRICTED", by, "ANYONE_WITH_NAME_CAN_READ") for by in By] == [none] * 3
    assert level("FOLLOW_USER_SETTING", By.ID, "ANYONE_WITH_ID_CAN_READ") is read  # the server's default


def test_the_levels_storage_is_given_are_those_the_rule_opens() -> None:
    for by, default in itertools.product(By, GENERAL_ACCESS[1:]):
        opened = {m for m in GENERAL_ACCESS if access.general_access_level(m, by, default) is Access.READ}
        assert set(access.readable_levels(by, default)) == opened, (by, default)


def test_the_callers_right() -> None:
    class Res:
        user_id = "alice"
        id = "s"

    alice, bob = auth.User("alice", "alice", None), auth.User("bob", "bob", None)  # type: ignore[attr-defined,arg-type]
    right = access.right_of
    assert right(Res, alice, None) is Access.OWNER  # type: ignore[arg-type]
    assert right(Res, bob, None) is Access.NONE  # type: ignore[arg-type]
    assert right(Res, bob, False) is Access.READ  # type: ignore[arg-type]
    assert right(Res, bob, True) is Access.WRITE  # type: ignore[arg-type]
    assert right(Res, None, None, Access.READ) is Access.READ  # type: ignore[arg-type]
    assert right(Res, bob, True, Access.READ) is Access.WRITE  # type: ignore[arg-type]


# -- decide(): order and charges -------------------------------------------------------------------------------


class Recording:
    """A rate-limit policy that allows everything and records what was charged to whom."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, str | None, bool]] = []

    async def check(self, identity: str, store_id: str | None, record_op: bool, push: bool = False) -> Verdict:
        self.charges.append((identity.split(":")[0], store_id, record_op))
        return Verdict(True, 0, 1)


class World:
    def __init__(self, backend: Storage, default: str = "RESTRICTED") -> None:
        self.storage = backend
        self.policy = Recording()
        self.settings = Settings.load({"rate_limits": "off", "default_general_access": default})
        self.state = AppState(self.settings, backend, auth.TokenCache(backend), self.policy)
        self.tokens: dict[str, str] = {}

    async def user(self, name: str) -> Any:
        user = await self.storage.create_user(name)
        self.tokens[name] = auth.new_token()
        await self.storage.add_token(user.id, auth.hash_token(self.tokens[name]))
        return user

    async def decide(self, who: str | None, raw: str, level: Access, signature: Signed | None = None,
                     query: str = "", **kw: Any) -> access.Decision:
        self.policy.charges.clear()
        headers = [(b"host", b"test")]
        token = self.tokens.get(who, who) if who else None  # a name, or a token that names nobody
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": headers,
                 "state": {"openkvs": self.state}, "client": ("127.0.0.1", 1)}
        return await access.decide(ApiRequest(scope), STORES, raw, level, signature, **kw)

    async def refused(self, error: type[errors.ApiError], *args: Any, **kw: Any) -> list[tuple]:
        with pytest.raises(errors.ApiError) as caught:
            await self.decide(*args, **kw)
        assert type(caught.value) is error, caught.value
        return self.policy.charges


@pytest.fixture
async def world(storage: Storage) -> Any:  # noqa: F811 - the imported fixture
    w = World(storage)
    alice, bob, carol = await w.user("alice"), await w.user("bob"), await w.user("carol")
    w.store = await storage.create_store(alice.id, "s", None, auth.new_signing_key())
    await storage.put_record(w.store.id, "rec", Body([b"bytes"]), "text/plain", None)
    await storage.set_grant(w.store.id, bob.id, True)
    w.users = {"alice": alice, "bob": bob, "carol": carol}
    return w


async def test_an_unknown_token_comes_first_and_is_charged_to_the_ip(world: World) -> None:
    for raw in (world.store.id, "NoSuchStore000000", "bad address!", "~s"):
        assert await world.refused(errors.TokenNotValid, "okvs_nobody", raw, Access.READ) == [("ip", None, False)]


async def test_an_impossible_address_is_404_without_a_charge(world: World) -> None:
    for raw in ("bad id!", "alice~bad name", "a~s", "~" + "n" * 64):
        assert await world.refused(errors.NotFound, "alice", raw, Access.READ) == [], raw
    assert await world.refused(errors.TokenNotProvided, None, "~bad name!", Access.READ) == []  # ~name: who?


async def test_a_missing_store_is_404_charged_to_the_caller(world: World) -> None:
    for who, raw in (("carol", "NoSuchStore000000"), ("alice", "~nope"), ("alice", "nobody~nope"),
                     ("alice", "bob~s"), (None, "alice~nope")):
        expected = [("user" if who else "ip", None, False)]
        assert await world.refused(errors.NotFound, who, raw, Access.READ) == expected, (who, raw)
    assert await world.refused(errors.TokenNotProvided, None, "~s", Access.READ) == []


async def test_then_the_store_budget_then_the_key_then_the_access(world: World) -> None:
    sid = world.store.id
    # a bad key is 400 even where access would be refused, after the charge to the record budget
    for who in ("alice", "carol", None):
        assert await world.refused(errors.InvalidRecordKey, who, sid, Access.WRITE, key="..") == [
            ("user" if who else "ip", sid, True)]
    assert await world.refused(errors.PermissionDenied, "carol", sid, Access.READ) == [("user", sid, False)]
    assert await world.refused(errors.TokenNotProvided, None, sid, Access.READ) == [("ip", sid, False)]
    # by name, a store the caller can't see at all does not exist; one it can see, but not enough, is 403
    assert await world.refused(errors.NotFound, "carol", "alice~s", Access.READ) == [("user", sid, False)]
    assert await world.refused(errors.NotFound, None, "alice~s", Access.READ) == [("ip", sid, False)]
    assert await world.refused(errors.PermissionDenied, "bob", "alice~s", Access.OWNER) == [("user", sid, False)]
    # a signature given that opens nothing here is a 403, not a 401
    assert await world.refused(errors.PermissionDenied, None, sid, Access.READ, query="signature=x") == [
        ("ip", sid, False)]


async def test_owner_only_is_a_level(world: World) -> None:
    sid = world.store.id
    assert (await world.decide("alice", sid, Access.OWNER)).access is Access.OWNER
    assert (await world.decide("alice", "~s", Access.OWNER)).access is Access.OWNER
    assert (await world.decide("bob", sid, Access.WRITE)).access is Access.WRITE
    await world.refused(errors.PermissionDenied, "bob", sid, Access.OWNER)  # write grant: still not the owner's
    await world.refused(errors.TokenNotProvided, None, sid, Access.OWNER)


async def test_signatures_stand_for_read_only(world: World) -> None:
    sid, secret = world.store.id, world.store.url_signing_secret_key
    rec_sig = f"signature={signing.record_signature(secret, 'rec')}"
    found = await world.decide(None, sid, Access.READ, Signed.RECORD, query=rec_sig, key="rec", fetch=True)
    assert (found.access, found.record_read, found.record) == (Access.NONE, False, None)  # not read yet: signed
    await world.refused(errors.PermissionDenied, None, sid, Access.READ, Signed.RECORD, query=rec_sig, key="other")
    await world.refused(errors.PermissionDenied, None, sid, Access.READ, Signed.CONTENT, query=rec_sig)
    await world.refused(errors.PermissionDenied, None, sid, Access.WRITE, Signed.RECORD, query=rec_sig, key="rec")
    content = f"signature={signing.content_signature(secret, sid)}"
    assert (await world.decide(None, sid, Access.READ, Signed.CONTENT, query=content)).store.id == sid
    await world.refused(errors.PermissionDenied, None, sid, Access.READ, Signed.RECORD, query=content, key="rec")


async def test_the_record_comes_along_for_who_may_read(world: World) -> None:
    sid = world.store.id
    for who in ("alice", "bob"):
        found = await world.decide(who, sid, Access.READ, key="rec", fetch=True)
        assert found.record_read and found.record.key == "rec" and world.policy.charges == [("user", sid, True)]
    found = await world.decide("alice", sid, Access.READ, key="missing", fetch=True)
    assert found.record_read and found.record is None
    found = await world.decide("alice", sid, Access.WRITE, key="rec")  # a write: nothing to read
    assert not found.record_read and found.record is None


async def test_general_access_by_the_servers_default(storage: Storage) -> None:  # noqa: F811
    w = World(storage, default="ANYONE_WITH_NAME_CAN_READ")
    alice = await w.user("alice")
    store = await storage.create_store(alice.id, "s", None, auth.new_signing_key())
    await storage.put_record(store.id, "rec", Body([b"bytes"]), "text/plain", None)
    for raw in (store.id, "alice~s"):
        found = await w.decide(None, raw, Access.READ, key="rec", fetch=True)
        assert (found.access, found.record.key) == (Access.READ, "rec"), raw
    await w.refused(errors.TokenNotProvided, None, store.id, Access.WRITE)
    await storage.update_store(store.id, {"general_access": "RESTRICTED"})
    await w.refused(errors.NotFound, None, "alice~s", Access.READ)


async def test_find_resolves_an_address_without_deciding(world: World) -> None:
    sid = world.store.id
    for raw in (sid, "alice~s", "alice~S"):
        assert (await access.find(world.storage, STORES, raw)).id == sid, raw
    assert (await access.find(world.storage, STORES, "~s", owner=world.users["alice"])).id == sid
    for raw in ("~s", "bob~s", "NoSuchStore000000", "bad id!"):
        assert await access.find(world.storage, STORES, raw) is None, raw


# -- handlers ----------------------------------------------------------------------------------------------------


async def test_head_of_a_store_reads_it_and_does_not_delete_it(storage: Storage) -> None:  # noqa: F811
    """HEAD goes to the GET handler; the store endpoint once took any method but GET and PUT for a DELETE."""
    alice = await storage.create_user("alice")
    token = auth.new_token()
    await storage.add_token(alice.id, auth.hash_token(token))
    store = await storage.create_store(alice.id, "s", None, auth.new_signing_key())
    async with app_client(storage) as (client, _):
        r = await client.head(f"/v2/key-value-stores/{store.id}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert await storage.get_store(store.id) is not None
