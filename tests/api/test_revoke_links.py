"""Signed links end with the access they came from (issue 11, item 12): removing a grant, lowering WRITE to READ,
or setting a store back to RESTRICTED gives the store a new URL-signing key, so the ``keysPublicUrl``,
``recordsPublicUrl`` and record URLs handed out before stop working. ``--no-rotate-signing-key-on-revoke`` keeps
the old behaviour."""

from __future__ import annotations

import secrets

import httpx
import pytest

from openkvs.signing import content_signature, record_signature
from tests.conftest import TLS

from . import new_store


def _user(server) -> tuple[str, httpx.Client]:
    name = "u" + secrets.token_hex(4)
    return name, server.client(server.new_user(name))


def _links(store: dict, keys_page: dict) -> dict[str, str]:
    """What a reader keeps: the two store links and a record link, as the server handed them out."""
    return {
        "keysPublicUrl": store["keysPublicUrl"],
        "recordsPublicUrl": store["recordsPublicUrl"],
        "recordPublicUrl": keys_page["items"][0]["recordPublicUrl"],
    }


def _statuses(links: dict[str, str]) -> dict[str, int]:
    return {name: httpx.get(url, timeout=30, verify=TLS).status_code for name, url in links.items()}


def _store_with_record(owner: httpx.Client) -> dict:
    store = new_store(owner)
    assert owner.put(f"/v2/key-value-stores/{store['id']}/records/rec", content=b"secret").status_code == 201
    return store


def _reader_links(client: httpx.Client, store_id: str) -> dict[str, str]:
    store = client.get(f"/v2/key-value-stores/{store_id}").json()["data"]
    page = client.get(f"/v2/key-value-stores/{store_id}/keys").json()["data"]
    links = _links(store, page)
    assert _statuses(links) == dict.fromkeys(links, 200)
    return links


def test_removing_a_read_grant_ends_the_readers_links(shared_server):
    owner = shared_server.client()
    sid = _store_with_record(owner)["id"]
    name, reader = _user(shared_server)
    assert owner.put(f"/v2/key-value-stores/{sid}/grants", json={"username": name, "access": "READ"}).status_code == 200
    links = _reader_links(reader, sid)

    assert owner.delete(f"/v2/key-value-stores/{sid}/grants/{name}").status_code == 204
    assert _statuses(links) == dict.fromkeys(links, 403)
    # the owner's store object carries working links again (shared from the new key)
    assert _reader_links(owner, sid)


def test_lowering_write_to_read_ends_what_the_writer_could_sign(shared_server):
    owner = shared_server.client()
    sid = _store_with_record(owner)["id"]
    name, writer = _user(shared_server)
    grants = f"/v2/key-value-stores/{sid}/grants"
    assert owner.put(grants, json={"username": name, "access": "WRITE"}).status_code == 200
    secret = writer.get(f"/v2/key-value-stores/{sid}").json()["data"]["urlSigningSecretKey"]
    base = f"{shared_server.url}/v2/key-value-stores/{sid}"
    minted = {  # never-expiring signatures the writer made with the key it was shown
        "record": f"{base}/records/rec?signature={record_signature(secret, 'rec')}",
        "keys": f"{base}/keys?signature={content_signature(secret, sid, 0)}",
    }
    assert _statuses(minted) == dict.fromkeys(minted, 200)

    assert owner.put(grants, json={"username": name, "access": "READ"}).status_code == 200
    assert _statuses(minted) == dict.fromkeys(minted, 403)
    assert writer.get(f"/v2/key-value-stores/{sid}/records/rec").status_code == 200  # still a reader


@pytest.mark.parametrize("back_to", ["RESTRICTED", "FOLLOW_USER_SETTING"])  # the server's default is RESTRICTED
def test_restricting_a_public_store_ends_the_links_anyone_got(shared_server, back_to):
    owner = shared_server.client()
    sid = _store_with_record(owner)["id"]
    assert owner.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"}).status_code == 200
    with shared_server.anon() as anyone:
        links = _reader_links(anyone, sid)
    r = owner.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": back_to})
    assert r.status_code == 200
    assert _statuses(links) == dict.fromkeys(links, 403)
    assert r.json()["data"]["keysPublicUrl"] != links["keysPublicUrl"]


def test_changes_that_take_nothing_back_keep_the_links(shared_server):
    owner = shared_server.client()
    sid = _store_with_record(owner)["id"]
    links = _reader_links(owner, sid)
    name, _ = _user(shared_server)
    grants = f"/v2/key-value-stores/{sid}/grants"
    assert owner.delete(f"{grants}/{name}").status_code == 204  # there was no grant
    assert owner.put(grants, json={"username": name, "access": "READ"}).status_code == 200
    assert owner.put(grants, json={"username": name, "access": "WRITE"}).status_code == 200  # raised, not lowered
    for level in ("ANYONE_WITH_NAME_CAN_READ", "ANYONE_WITH_ID_CAN_READ"):  # opened, then narrowed but still open
        assert owner.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": level}).status_code == 200
    assert owner.put(f"/v2/key-value-stores/{sid}", json={"name": "n" + secrets.token_hex(4)}).status_code == 200
    assert _statuses(links) == dict.fromkeys(links, 200)


def test_the_cli_rotates_too(shared_server):
    owner = shared_server.client()
    sid = _store_with_record(owner)["id"]
    name, reader = _user(shared_server)
    shared_server.cli("grants", "add", sid, name, "--read")
    links = _reader_links(reader, sid)
    out = shared_server.cli("grants", "remove", sid, name)
    assert "new URL-signing key" in out
    assert _statuses(links) == dict.fromkeys(links, 403)


def test_the_rotation_can_be_switched_off(start_server, tmp_path):
    server = start_server(tmp_path, "sqlite", "--no-rotate-signing-key-on-revoke", in_process=True)
    owner = server.client()
    sid = _store_with_record(owner)["id"]
    name, reader = _user(server)
    assert owner.put(f"/v2/key-value-stores/{sid}/grants", json={"username": name, "access": "READ"}).status_code == 200
    links = _reader_links(reader, sid)
    assert owner.delete(f"/v2/key-value-stores/{sid}/grants/{name}").status_code == 204
    assert owner.put(f"/v2/key-value-stores/{sid}", json={"generalAccess": "RESTRICTED"}).status_code == 200
    assert _statuses(links) == dict.fromkeys(links, 200)
