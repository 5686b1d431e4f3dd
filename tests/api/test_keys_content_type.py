"""``GET /keys`` items carry each record's ``contentType`` (an openkvs extension): the Content-Type a GET of the
record answers, for every way a type is given or left out, on every backend; the official client keeps it."""

from __future__ import annotations

import os

from apify_client import ApifyClient

from tests.conftest import Server

from . import new_store, rec_path


def test_keys_list_each_records_content_type(shared_server: Server) -> None:
    sent = {
        "doc": ("application/json; charset=utf-8", b'{"a": 1}'),
        "page": ("text/html", b"<p>hi</p>"),
        "pic": ("image/png", os.urandom(200_000)),  # a file, chunks or an object: the type is in the row all the same
        "raw": (None, b"\x00\x01"),  # none given: application/octet-stream
        "odd": ("application/x-thing; v=\"1\"", b"x"),
    }
    with shared_server.client() as c:
        sid = new_store(c)["id"]
        for key, (ctype, body) in sent.items():
            headers = {"Content-Type": ctype} if ctype else {}
            assert c.put(rec_path(sid, key), content=body, headers=headers).status_code == 201
        items = c.get(f"/v2/key-value-stores/{sid}/keys").json()["data"]["items"]
        listed = {i["key"]: i["contentType"] for i in items}
        answered = {key: c.head(rec_path(sid, key)).headers["content-type"] for key in sent}
        assert listed == answered
        assert listed["raw"] == "application/octet-stream" and listed["doc"] == "application/json; charset=utf-8"
        # an overwrite with another type: the listing follows
        assert c.put(rec_path(sid, "doc"), content=b"plain", headers={"Content-Type": "text/plain"}).status_code == 201
        page = c.get(f"/v2/key-value-stores/{sid}/keys", params={"prefix": "do"}).json()["data"]["items"]
        assert [(i["key"], i["contentType"]) for i in page] == [("doc", "text/plain")]
        signed = c.get(f"/v2/key-value-stores/{sid}").json()["data"]["keysPublicUrl"]
    with shared_server.anon() as anon:  # the signed key list (no token) carries it too
        items = anon.get(signed.replace(shared_server.url, "")).json()["data"]["items"]
        assert {i["key"]: i["contentType"] for i in items}["page"] == "text/html"

    client = ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1)
    keys = client.key_value_store(sid).list_keys(prefix="odd")
    item = keys.items[0] if not isinstance(keys, dict) else keys["items"][0]
    extra = item.model_extra if hasattr(item, "model_extra") else item
    assert extra["contentType"] == "application/x-thing; v=\"1\""
