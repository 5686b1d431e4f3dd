"""Access control (API.md section 5), on the wire, against a real server on each backend.

The heart is one table: every caller x generalAccess x addressing x signature x endpoint, with the expected
(status, error type) computed by ``expected()``, a small oracle written from the rules of section 5 (not from what
the server answers). Then: sharing (grants API and CLI, ``ownership``), key rotation (API and CLI), the official
client's public URLs, and signatures that are expired, foreign or garbage.

Where section 5 leaves a choice open, the oracle states it (search for "reading:").
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from apify_client import ApifyClient
from apify_client._utils.crypto import create_hmac_signature, create_storage_content_signature

from openkvs.signing import content_signature
from tests.conftest import Server, _release_schema, make_server

# -- the dimensions -------------------------------------------------------------------------------------------------

CALLERS = ("owner", "reader", "writer", "other", "anonymous", "invalid")
GENERAL_ACCESS = ("RESTRICTED", "FOLLOW_USER_SETTING", "ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ")
ADDRESSING = ("id", "name")  # by ID, or username~name
SIGNATURES = ("none", "content", "record", "bad")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # appended to /v2/key-value-stores/{store}
    key: str | None = None  # the record key in the path, for record endpoints
    ok: int = 200
    writes: bool = False


ENDPOINTS = (
    Endpoint("GET store", "GET", ""),
    Endpoint("PUT store", "PUT", "", writes=True),
    Endpoint("DELETE store", "DELETE", "", ok=204, writes=True),
    Endpoint("GET keys", "GET", "/keys"),
    Endpoint("GET records (zip)", "GET", "/records"),
    Endpoint("GET record", "GET", "/records/rec", key="rec"),
    Endpoint("HEAD record", "HEAD", "/records/rec", key="rec"),
    Endpoint("PUT record", "PUT", "/records/put-me", key="put-me", ok=201, writes=True),
    Endpoint("DELETE record", "DELETE", "/records/del-me", key="del-me", ok=204, writes=True),
)
BY_NAME = {e.name: e for e in ENDPOINTS}

NONE, READ, WRITE = 0, 1, 2
DENIED = (403, "permission-denied")
NO_TOKEN = (401, "token-not-provided")
BAD_TOKEN = (401, "token-not-valid")
HIDDEN = (404, "record-not-found")


def expected(caller: str, general_access: str, addressing: str, signature: str, ep: Endpoint,
             server_default: str = "RESTRICTED") -> tuple[int, str | None]:
    """The answer section 5 prescribes: (status, error type or None for success)."""
    if caller == "invalid":
        return BAD_TOKEN  # 5.1: an unknown token is refused whatever else the request holds
    # 5.2: the owner may do everything; a grant gives read or read+write.
    level = {"owner": WRITE, "writer": WRITE, "reader": READ}.get(caller, NONE)
    # 5.2: generalAccess opens reads to anyone: *_ID_* only when addressed by ID, *_NAME_* by ID or by name.
    mode = server_default if general_access == "FOLLOW_USER_SETTING" else general_access
    if mode == "ANYONE_WITH_NAME_CAN_READ" or (mode == "ANYONE_WITH_ID_CAN_READ" and addressing == "id"):
        level = max(level, READ)
    needs = WRITE if ep.writes else READ
    # 5.3: a record signature opens GET/HEAD of its record; a content signature opens /keys and the ZIP.
    signed = (signature == "record" and ep.key == "rec") or (
        signature == "content" and ep.name in ("GET keys", "GET records (zip)")
    )
    allowed = level >= needs or (signed and needs == READ)
    # reading: deleting the whole store is the owner's ("may do everything"); a write grant covers the store's
    # contents and metadata, not its existence.
    if ep.name == "DELETE store" and caller != "owner":
        allowed = False
    if allowed:
        return ep.ok, None
    # 5.2: another user's store addressed by name that the caller can't read: as if it did not exist.
    if addressing == "name" and level == NONE:
        return HIDDEN
    if caller == "anonymous":
        # reading: a signature that was given but opens nothing here counts as a bad signature (5.3: 403).
        return DENIED if signature != "none" else NO_TOKEN
    return DENIED


# -- the server and its stores, built once per module and backend ----------------------------------------------------


@dataclass
class World:
    server: Server
    default: str
    tokens: dict[str, str | None]
    clients: dict[str, httpx.Client]
    stores: dict[str, dict] = field(default_factory=dict)  # generalAccess -> store JSON (as the owner sees it)
    made: int = 0

    def new_store(self, general_access: str, name: str | None = None) -> dict:
        """An alice store with the record 'rec', shared with reader (READ) and writer (WRITE)."""
        self.made += 1
        name = name or f"d{self.made}-{secrets.token_hex(3)}"
        owner = self.clients["owner"]
        r = owner.post("/v2/key-value-stores", params={"name": name})
        assert r.status_code == 201, r.text
        sid = r.json()["data"]["id"]
        r = owner.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": general_access})
        assert r.status_code == 200 and r.json()["data"]["generalAccess"] == general_access, r.text
        assert owner.put(f"/v2/key-value-stores/{sid}/records/rec", content=b"rec-bytes",
                         headers={"Content-Type": "text/plain"}).status_code == 201
        for user, access in (("bob", "READ"), ("carol", "WRITE")):
            r = owner.put(f"/v2/key-value-stores/{sid}/grants", json={"username": user, "access": access})
            assert r.status_code == 200, r.text
        store = owner.get(f"/v2/key-value-stores/{sid}").json()["data"]
        assert store["urlSigningSecretKey"]
        return store


SERVER_CONFIGS = [
    ("sqlite", "RESTRICTED"),
    ("postgres", "RESTRICTED"),
    ("sqlite", "ANYONE_WITH_ID_CAN_READ"),
    ("sqlite", "ANYONE_WITH_NAME_CAN_READ"),
]


@pytest.fixture(scope="module", params=SERVER_CONFIGS, ids=lambda c: f"{c[0]}-default-{c[1]}")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    backend, default = request.param
    tmp: Path = tmp_path_factory.mktemp(f"access-{backend}")
    server = make_server(tmp, backend, "--rate-limits", "off", "--default-general-access", default, in_process=True)
    try:
        tokens: dict[str, str | None] = {
            "owner": server.token,
            "reader": server.new_user("bob"),
            "writer": server.new_user("carol"),
            "other": server.new_user("mallory"),
            "anonymous": None,
            "invalid": "okvs_" + secrets.token_urlsafe(30),
        }
        limits = httpx.Limits(max_keepalive_connections=4)
        clients = {who: server.client(tok or "", limits=limits) for who, tok in tokens.items()}
        w = World(server, default, tokens, clients)
        for ga in GENERAL_ACCESS:
            w.stores[ga] = w.new_store(ga, name=f"s-{ga.lower().replace('_', '-')}")
        yield w
        for c in clients.values():
            c.close()
    finally:
        server.stop()
        if backend == "postgres":
            _release_schema(server.env["OPENKVS_DATABASE_SCHEMA"])


def signature_for(kind: str, store: dict, ep: Endpoint) -> str | None:
    secret = store["urlSigningSecretKey"]
    key = ep.key or "rec"
    if kind == "content":
        return create_storage_content_signature(store["id"], secret)
    if kind == "record":
        return create_hmac_signature(secret, key)
    if kind == "bad":  # well-formed, made with the wrong secret
        if ep.name in ("GET keys", "GET records (zip)"):
            return content_signature("not-the-secret", store["id"], 0)
        return create_hmac_signature("not-the-secret", key)
    return None


def send(w: World, caller: str, store: dict, addressing: str, sig_kind: str, ep: Endpoint) -> httpx.Response:
    ref = store["id"] if addressing == "id" else f"alice~{store['name']}"
    params = {}
    sig = signature_for(sig_kind, store, ep)
    if sig is not None:
        params["signature"] = sig
    kw: dict = {"params": params}
    if ep.name == "PUT store":
        kw["json"] = {}
    elif ep.name == "PUT record":
        kw["content"] = b"written"
        kw["headers"] = {"Content-Type": "text/plain"}
    return w.clients[caller].request(ep.method, f"/v2/key-value-stores/{ref}{ep.path}", **kw)


def check_cell(w: World, caller: str, ga: str, addressing: str, sig: str, ep: Endpoint, store: dict) -> str | None:
    """Send one cell; None if the answer is the expected one, else a line describing the difference."""
    want_status, want_type = expected(caller, ga, addressing, sig, ep, w.default)
    r = send(w, caller, store, addressing, sig, ep)
    got_type = None
    if r.status_code >= 400 and ep.method != "HEAD":
        try:
            got_type = r.json()["error"]["type"]
        except (ValueError, KeyError, TypeError):
            got_type = f"<not an API error: {r.text[:80]!r}>"
    want = (want_status, want_type if ep.method != "HEAD" else None)
    problems = []
    if (r.status_code, got_type) != want:
        problems.append(f"got {r.status_code} {got_type}")
    elif want_type is None:
        problems += success_problems(w, caller, ep, r)
    if ep.method == "HEAD" and r.content:
        problems.append("HEAD has a body")
    if problems:
        return f"{caller:9} {ga:26} by {addressing:4} sig={sig:7} {ep.name:18} want {want}: {'; '.join(problems)}"
    return None


def success_problems(w: World, caller: str, ep: Endpoint, r: httpx.Response) -> list[str]:
    """What a 2xx must carry beyond its status."""
    out = []
    if ep.name in ("GET store", "PUT store"):
        data = r.json()["data"]
        may_write = caller in ("owner", "writer")
        if ("urlSigningSecretKey" in data) != may_write:
            out.append(f"urlSigningSecretKey {'missing' if may_write else 'revealed'}")
    elif ep.name == "GET keys":
        if "rec" not in [i["key"] for i in r.json()["data"]["items"]]:
            out.append("key 'rec' not listed")
    elif ep.name == "GET records (zip)":
        if not (r.headers.get("content-type") == "application/zip" and r.content[:2] == b"PK"):
            out.append("not a ZIP")
    elif ep.name == "GET record":
        if r.content != b"rec-bytes":
            out.append(f"body {r.content[:40]!r}")
    return out


MATRIX_ENDPOINTS = [e for e in ENDPOINTS if e.name != "DELETE store"]


@pytest.mark.parametrize("ep", MATRIX_ENDPOINTS, ids=lambda e: e.name)
def test_matrix(world: World, ep: Endpoint) -> None:
    failures = []
    cells = 0
    for caller, ga, addressing, sig in itertools.product(CALLERS, GENERAL_ACCESS, ADDRESSING, SIGNATURES):
        cells += 1
        problem = check_cell(world, caller, ga, addressing, sig, ep, world.stores[ga])
        if problem:
            failures.append(problem)
    assert cells == len(CALLERS) * len(GENERAL_ACCESS) * len(ADDRESSING) * len(SIGNATURES)
    assert not failures, f"{len(failures)} of {cells} cells differ from section 5:\n" + "\n".join(failures)


def test_matrix_delete_store(world: World) -> None:
    """DELETE of a store: a store of its own for every cell the oracle lets through (it is gone afterwards);
    refused cells go to one victim per generalAccess, which must still exist at the end."""
    ep = BY_NAME["DELETE store"]
    victims = {ga: world.new_store(ga) for ga in GENERAL_ACCESS}
    failures = []
    for caller, ga, addressing, sig in itertools.product(CALLERS, GENERAL_ACCESS, ADDRESSING, SIGNATURES):
        ok = expected(caller, ga, addressing, sig, ep, world.default)[1] is None
        store = world.new_store(ga) if ok else victims[ga]
        problem = check_cell(world, caller, ga, addressing, sig, ep, store)
        if problem:
            failures.append(problem)
        if ok and not problem:
            assert world.clients["owner"].get(f"/v2/key-value-stores/{store['id']}").status_code == 404
    for ga, store in victims.items():
        r = world.clients["owner"].get(f"/v2/key-value-stores/{store['id']}/records/rec")
        assert r.status_code == 200, f"a refused DELETE removed the {ga} store"
    assert not failures, f"{len(failures)} cells differ from section 5:\n" + "\n".join(failures)


def test_oracle_covers_every_rule() -> None:
    """The table really exercises each rule (so a sampling or oracle bug can't hide one)."""
    outcomes = {
        expected(c, g, a, s, e, d)
        for c, g, a, s, e, d in itertools.product(
            CALLERS, GENERAL_ACCESS, ADDRESSING, SIGNATURES, ENDPOINTS, ("RESTRICTED", "ANYONE_WITH_NAME_CAN_READ")
        )
    }
    assert {BAD_TOKEN, NO_TOKEN, DENIED, HIDDEN, (200, None), (201, None), (204, None)} <= outcomes
    # spot checks of the rules in words
    get_rec, keys, put_rec = BY_NAME["GET record"], BY_NAME["GET keys"], BY_NAME["PUT record"]
    assert expected("anonymous", "RESTRICTED", "id", "record", get_rec) == (200, None)
    assert expected("anonymous", "RESTRICTED", "id", "record", keys) == DENIED
    assert expected("anonymous", "RESTRICTED", "id", "content", keys) == (200, None)
    assert expected("anonymous", "RESTRICTED", "id", "content", get_rec) == DENIED
    assert expected("anonymous", "RESTRICTED", "name", "none", get_rec) == HIDDEN
    assert expected("anonymous", "RESTRICTED", "id", "none", get_rec) == NO_TOKEN
    assert expected("anonymous", "ANYONE_WITH_ID_CAN_READ", "name", "none", get_rec) == HIDDEN
    assert expected("anonymous", "ANYONE_WITH_NAME_CAN_READ", "name", "none", get_rec) == (200, None)
    assert expected("anonymous", "ANYONE_WITH_NAME_CAN_READ", "id", "none", put_rec) == NO_TOKEN
    assert expected("other", "ANYONE_WITH_NAME_CAN_READ", "id", "none", put_rec) == DENIED
    assert expected("reader", "RESTRICTED", "name", "none", put_rec) == DENIED
    assert expected("other", "RESTRICTED", "name", "bad", get_rec) == HIDDEN
    assert expected("invalid", "ANYONE_WITH_NAME_CAN_READ", "id", "record", get_rec) == BAD_TOKEN
    assert expected("anonymous", "FOLLOW_USER_SETTING", "id", "none", get_rec) == NO_TOKEN
    assert expected("anonymous", "FOLLOW_USER_SETTING", "id", "none", get_rec, "ANYONE_WITH_ID_CAN_READ") == (200, None)


# -- sharing --------------------------------------------------------------------------------------------------------


def _ids(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()["data"]["items"]}


def test_ownership_filters(world: World) -> None:
    shared = {s["id"] for s in world.stores.values()}
    bob, carol, alice = world.clients["reader"], world.clients["writer"], world.clients["owner"]
    assert shared <= _ids(bob.get("/v2/key-value-stores", params={"ownership": "sharedWithMe"}))
    assert not shared & _ids(bob.get("/v2/key-value-stores", params={"ownership": "ownedByMe"}))
    assert shared <= _ids(bob.get("/v2/key-value-stores"))
    assert shared <= _ids(alice.get("/v2/key-value-stores", params={"ownership": "ownedByMe"}))
    assert not shared & _ids(alice.get("/v2/key-value-stores", params={"ownership": "sharedWithMe"}))
    assert not shared & _ids(world.clients["other"].get("/v2/key-value-stores"))
    # the signing key only to who may write
    for client, may_write in ((bob, False), (carol, True)):
        items = client.get("/v2/key-value-stores", params={"ownership": "sharedWithMe"}).json()["data"]["items"]
        for item in items:
            assert ("urlSigningSecretKey" in item) == may_write, item


def test_grants_api(world: World) -> None:
    w = world
    store = w.new_store("RESTRICTED")
    sid = store["id"]
    alice, bob, carol = w.clients["owner"], w.clients["reader"], w.clients["writer"]
    mallory, anon = w.clients["other"], w.clients["anonymous"]
    grants_url = f"/v2/key-value-stores/{sid}/grants"

    r = alice.get(grants_url)
    assert r.status_code == 200
    assert {(g["username"], g["access"]) for g in r.json()["data"]["items"]} == {("bob", "READ"), ("carol", "WRITE")}

    # only the owner manages grants
    for client, want in ((bob, DENIED), (carol, DENIED), (mallory, DENIED), (anon, NO_TOKEN)):
        for r in (client.get(grants_url), client.put(grants_url, json={"username": "mallory", "access": "WRITE"}),
                  client.delete(f"{grants_url}/bob")):
            assert (r.status_code, r.json()["error"]["type"]) == want, r.text
    # by name, a stranger sees nothing
    r = mallory.get(f"/v2/key-value-stores/alice~{store['name']}/grants")
    assert (r.status_code, r.json()["error"]["type"]) == HIDDEN

    # bad requests
    for body in ({"username": "nobody-here", "access": "READ"}, {"username": "bob", "access": "ADMIN"},
                 {"username": "alice", "access": "READ"}, {"username": "../x", "access": "READ"}, ["bob"]):
        r = alice.put(grants_url, json=body)
        assert (r.status_code, r.json()["error"]["type"]) == (400, "invalid-input"), (body, r.text)

    # grant mallory read: she reads, can't write; upgrade to write: she writes
    rec = f"/v2/key-value-stores/{sid}/records/rec"
    assert mallory.get(rec).status_code == 403
    assert alice.put(grants_url, json={"username": "mallory", "access": "READ"}).status_code == 200
    assert mallory.get(rec).status_code == 200
    assert mallory.get(f"/v2/key-value-stores/alice~{store['name']}/records/rec").status_code == 200
    assert mallory.put(rec, content=b"x").status_code == 403
    assert sid in _ids(mallory.get("/v2/key-value-stores", params={"ownership": "sharedWithMe"}))
    assert alice.put(grants_url, json={"username": "mallory", "access": "WRITE"}).status_code == 200
    assert mallory.put(rec, content=b"rec-bytes", headers={"Content-Type": "text/plain"}).status_code == 201
    access = {g["username"]: g["access"] for g in alice.get(grants_url).json()["data"]["items"]}
    assert access == {"bob": "READ", "carol": "WRITE", "mallory": "WRITE"}

    # take it back: 204, idempotent, and access is gone at once
    assert alice.delete(f"{grants_url}/mallory").status_code == 204
    assert alice.delete(f"{grants_url}/mallory").status_code == 204
    assert alice.delete(f"{grants_url}/nobody-here").status_code == 204
    assert mallory.get(rec).status_code == 403
    r = mallory.get(f"/v2/key-value-stores/alice~{store['name']}/records/rec")
    assert (r.status_code, r.json()["error"]["type"]) == HIDDEN
    assert sid not in _ids(mallory.get("/v2/key-value-stores", params={"ownership": "sharedWithMe"}))


def test_grants_cli(world: World) -> None:
    w = world
    store = w.new_store("RESTRICTED")
    sid, ref = store["id"], f"alice~{store['name']}"
    mallory = w.clients["other"]
    rec = f"/v2/key-value-stores/{sid}/records/rec"
    assert mallory.get(rec).status_code == 403

    w.server.cli("grants", "add", ref, "mallory", "--read")
    assert mallory.get(rec).status_code == 200
    assert mallory.put(rec, content=b"x").status_code == 403
    listed = w.server.cli("grants", "list", sid)
    assert "mallory\tread" in listed and "bob\tread" in listed and "carol\twrite" in listed

    w.server.cli("grants", "add", sid, "mallory", "--write")
    assert "mallory\twrite" in w.server.cli("grants", "list", ref)
    assert mallory.put(rec, content=b"rec-bytes", headers={"Content-Type": "text/plain"}).status_code == 201
    api = {g["username"]: g["access"] for g in w.clients["owner"].get(f"/v2/key-value-stores/{sid}/grants").json()["data"]["items"]}
    assert api["mallory"] == "WRITE"

    assert "removed" in w.server.cli("grants", "remove", ref, "mallory")
    assert "mallory" not in w.server.cli("grants", "list", ref)
    assert mallory.get(rec).status_code == 403
    assert "no such grant" in w.server.cli("grants", "remove", ref, "mallory")

    # refusals exit non-zero and change nothing
    for args in (("grants", "add", ref, "nobody-here", "--read"), ("grants", "add", ref, "alice", "--write"),
                 ("grants", "add", "alice~no-such-store", "mallory", "--read"), ("grants", "list", "NoSuchId123")):
        out = w.server.cli_result(*args)  # a traceback would be raised here, not counted as a refusal
        assert out.returncode != 0, (args, out.stdout)
    assert {line.split("\t")[0] for line in w.server.cli("grants", "list", ref).splitlines()} == {"bob", "carol"}


def test_token_in_query_string(world: World) -> None:
    """5.1: ?token= works like the header, and an unknown one is 401 token-not-valid even beside a valid signature."""
    store = world.stores["RESTRICTED"]
    anon, url = world.clients["anonymous"], f"/v2/key-value-stores/{store['id']}/records/rec"
    assert anon.get(url, params={"token": world.tokens["reader"]}).status_code == 200
    assert anon.put(url, params={"token": world.tokens["reader"]}, content=b"x").status_code == 403
    r = anon.get(url, params={"token": "okvs_nope", "signature": create_hmac_signature(store["urlSigningSecretKey"], "rec")})
    assert (r.status_code, r.json()["error"]["type"]) == BAD_TOKEN
    r = anon.get(f"/v2/key-value-stores/alice~{store['name']}", params={"token": world.tokens["other"]})
    assert (r.status_code, r.json()["error"]["type"]) == HIDDEN


# -- rotation -------------------------------------------------------------------------------------------------------


def _public(w: World, store: dict) -> dict[str, str]:
    """Signed URLs (record, keys, ZIP, and the server's own keysPublicUrl) made with the store's current key."""
    secret, sid = store["urlSigningSecretKey"], store["id"]
    base = f"{w.server.url}/v2/key-value-stores/{sid}"
    content = create_storage_content_signature(sid, secret)
    return {
        "record": f"{base}/records/rec?signature={create_hmac_signature(secret, 'rec')}",
        "keys": f"{base}/keys?signature={content}",
        "zip": f"{base}/records?signature={content}",
        "keysPublicUrl": store["keysPublicUrl"],
        "recordsPublicUrl": store["recordsPublicUrl"],
    }


def _statuses(w: World, urls: dict[str, str]) -> dict[str, int]:
    anon = w.clients["anonymous"]
    return {k: anon.get(u).status_code for k, u in urls.items()}


@pytest.mark.parametrize("how", ["api", "cli"])
def test_rotation_voids_old_signatures(world: World, how: str) -> None:
    w = world
    store = w.new_store("RESTRICTED")
    sid = store["id"]
    old = _public(w, store)
    assert set(_statuses(w, old).values()) == {200}
    if how == "api":
        for who, want in (("reader", DENIED), ("writer", DENIED), ("other", DENIED), ("anonymous", NO_TOKEN)):
            r = w.clients[who].post(f"/v2/key-value-stores/{sid}/signing-key")
            assert (r.status_code, r.json()["error"]["type"]) == want, who
        assert _statuses(w, old) == dict.fromkeys(old, 200)  # refused rotations changed nothing
        r = w.clients["owner"].post(f"/v2/key-value-stores/{sid}/signing-key")
        assert r.status_code == 200, r.text
        new_secret = r.json()["data"]["urlSigningSecretKey"]
    else:
        w.server.cli("stores", "rotate-signing-key", f"alice~{store['name']}")
        new_secret = w.clients["owner"].get(f"/v2/key-value-stores/{sid}").json()["data"]["urlSigningSecretKey"]
    assert new_secret != store["urlSigningSecretKey"]
    after = _statuses(w, old)
    assert after == dict.fromkeys(old, 403), after
    fresh = w.clients["owner"].get(f"/v2/key-value-stores/{sid}").json()["data"]
    assert set(_statuses(w, _public(w, fresh)).values()) == {200}


# -- the official client ----------------------------------------------------------------------------------------------


def test_official_client_public_urls(world: World) -> None:
    w = world
    store = w.new_store("RESTRICTED")
    client = ApifyClient(w.tokens["owner"], api_url=w.server.url, api_public_url=w.server.url, max_retries=0)
    kvs = client.key_value_store(store["id"])
    record_url = kvs.get_record_public_url("rec")
    keys_url = kvs.create_keys_public_url()
    expiring_url = kvs.create_keys_public_url(expires_in=timedelta(hours=1))
    expired_url = kvs.create_keys_public_url(expires_in=timedelta(seconds=-1))
    assert all(u.startswith(w.server.url + "/v2/key-value-stores/") and "signature=" in u
               for u in (record_url, keys_url, expiring_url, expired_url))
    anon = w.clients["anonymous"]
    r = anon.get(record_url)
    assert (r.status_code, r.content) == (200, b"rec-bytes")
    for url in (keys_url, expiring_url):
        r = anon.get(url)
        assert r.status_code == 200 and [i["key"] for i in r.json()["data"]["items"]] == ["rec"]
        # the recordPublicUrl in a listing opens the record too
        assert anon.get(r.json()["data"]["items"][0]["recordPublicUrl"]).content == b"rec-bytes"
    r = anon.get(expired_url)
    assert (r.status_code, r.json()["error"]["type"]) == DENIED

    # A reader's client gets no signing key, so its URLs carry no signature: they don't open the store.
    bob = ApifyClient(w.tokens["reader"], api_url=w.server.url, api_public_url=w.server.url, max_retries=0)
    unsigned = bob.key_value_store(store["id"]).get_record_public_url("rec")
    assert "signature=" not in unsigned
    assert anon.get(unsigned).status_code == 401

    assert w.clients["owner"].post(f"/v2/key-value-stores/{store['id']}/signing-key").status_code == 200
    for url in (record_url, keys_url, expiring_url):
        r = anon.get(url)
        assert (r.status_code, r.json()["error"]["type"]) == DENIED, url
    assert anon.get(kvs.get_record_public_url("rec")).status_code == 200


# -- signatures that must not open anything ----------------------------------------------------------------------------


def _denied(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["error"]["type"] == "permission-denied"


def test_wrong_signatures(world: World) -> None:
    w = world
    store, other = w.new_store("RESTRICTED"), w.new_store("RESTRICTED")
    assert w.clients["owner"].put(f"/v2/key-value-stores/{store['id']}/records/second", content=b"2").status_code == 201
    sid, secret = store["id"], store["urlSigningSecretKey"]
    anon, mallory = w.clients["anonymous"], w.clients["other"]
    base = f"/v2/key-value-stores/{sid}"
    now_ms = int(time.time() * 1000)
    cases = {
        "expired content signature": ("/keys", content_signature(secret, sid, now_ms - 1000)),
        "expired content signature (zip)": ("/records", content_signature(secret, sid, now_ms - 1000)),
        "content signature of another store": ("/keys", create_storage_content_signature(other["id"], other["urlSigningSecretKey"])),
        "another store's secret for this id": ("/records", create_storage_content_signature(sid, other["urlSigningSecretKey"])),
        "this secret for another id": ("/keys", create_storage_content_signature(other["id"], secret)),
        "record signature of another key": ("/records/second", create_hmac_signature(secret, "rec")),
        "record signature of another store": ("/records/rec", create_hmac_signature(other["urlSigningSecretKey"], "rec")),
        "record signature as content signature": ("/keys", create_hmac_signature(secret, "rec")),
        "content signature as record signature": ("/records/rec", create_storage_content_signature(sid, secret)),
        "version 1": ("/keys", content_signature(secret, sid, 0).replace("MC4w", "MS4w", 1)),
    }
    for what, (path, sig) in cases.items():
        for client in (anon, mallory):
            r = client.get(base + path, params={"signature": sig})
            assert _denied(r), (what, r.status_code, r.text)
    # and the record signature of "second" opens only "second"
    r = anon.get(base + "/records/second", params={"signature": create_hmac_signature(secret, "second")})
    assert (r.status_code, r.content) == (200, b"2")
    r = anon.head(base + "/records/rec", params={"signature": create_hmac_signature(secret, "second")})
    assert (r.status_code, r.content) == (403, b"")


GARBAGE = [
    "x",
    "=",
    "====",
    "....",
    "0.0.0",
    "MC4wLjAuMA",  # base64url of "0.0.0"
    "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS",  # the worked example (another store id, another secret)
    "A" * 1023,
    "A" * 1025,
    "Zm9v" * 1500,  # 6,000 characters of valid base64
    "é" * 500,
    "\u202e\u0000\ufffd",
    "😀" * 100,
    "%",
    "\\x00",
    "' OR 1=1 --",
    "0." * 300,
]


def test_garbage_signatures_are_403_never_500(world: World) -> None:
    w = world
    store = w.stores["RESTRICTED"]
    rng = random.Random(5)
    garbage = GARBAGE + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("latin-1")
                         for _ in range(20)]
    raw = [  # percent-encoded bytes that are not UTF-8, sent as they are
        "%ff%fe%fd", "%00", "%c3%28", "%ed%a0%80", "%80" * 300,
    ]
    anon, mallory = w.clients["anonymous"], w.clients["other"]
    for path in ("/keys", "/records", "/records/rec"):
        url = f"/v2/key-value-stores/{store['id']}{path}"
        for sig in garbage:
            for client in (anon, mallory):
                r = client.get(url, params={"signature": sig})
                assert _denied(r), (path, sig[:40], r.status_code, r.text[:200])
            assert anon.head(url, params={"signature": sig}).status_code == 403
        for enc in raw:
            r = anon.get(f"{url}?signature={enc}")
            assert _denied(r), (path, enc, r.status_code, r.text[:200])
    # by name, for a stranger, garbage changes nothing: still hidden
    r = mallory.get(f"/v2/key-value-stores/alice~{store['name']}/keys", params={"signature": "garbage"})
    assert (r.status_code, r.json()["error"]["type"]) == HIDDEN
    assert "Traceback" not in w.server.log() and "internal-server-error" not in w.server.log()
