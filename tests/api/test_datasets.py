"""The dataset endpoints over HTTP on both backends (API-datasets.md): push (4.4) with its bad inputs, the dataset
object (4.3), the items endpoint's selection and headers (4.5), access (section 8), and snapshots (section 7)."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest

from . import assert_error, unique

LIMIT = 9_437_184


def deflated_spaces(prefix: bytes, mib: int, suffix: bytes) -> bytes:
    """``prefix``, ``mib`` MiB of spaces and ``suffix`` in zlib's format, made from one compressed MiB repeated (each
    copy flushed whole, so that all decode alike, and the checksum of the whole): compressing the 576 MiB took 3.7 s
    of CPU, this 0.2 s."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    spaces = b" " * (1 << 20)
    head = raw.compress(prefix) + raw.flush(zlib.Z_FULL_FLUSH)
    block = raw.compress(spaces) + raw.flush(zlib.Z_FULL_FLUSH)
    tail = raw.compress(suffix) + raw.flush()
    check = zlib.adler32(prefix)
    for _ in range(mib):
        check = zlib.adler32(spaces, check)
    return b"\x78\xda" + head + block * mib + tail + zlib.adler32(suffix, check).to_bytes(4, "big")


def test_deflated_spaces_is_zlib_of_the_same_bytes():
    bomb = deflated_spaces(b"[", 3, b"]")
    assert zlib.decompress(bomb) == b"[" + b" " * (3 << 20) + b"]" and len(bomb) < 4000


def new_dataset(c: httpx.Client, name: str | None = None, **body: object) -> dict:
    r = c.post("/v2/datasets", params={"name": name or unique("ds")}, json=body or {})
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"/v2/datasets/{r.json()['data']['id']}")
    return r.json()["data"]


def items_url(did: str) -> str:
    return f"/v2/datasets/{did}/items"


def test_push_one_object_or_an_array_and_read_back(shared_server):
    with shared_server.client() as c:
        ds = new_dataset(c)
        r = c.post(items_url(ds["id"]), json={"a": 1, "é": "ü"})
        assert r.status_code == 201, r.text
        assert r.json() == {} and r.headers["location"].endswith(items_url(ds["id"]))
        assert c.post(items_url(ds["id"]), json=[{"b": [1, {"c": None}]}, {"#h": True}]).status_code == 201
        assert c.post(items_url(ds["id"]), json=[]).status_code == 201  # stores nothing
        # Key order kept, duplicate keys: last wins, numbers unchanged in value.
        raw = b'{"z": 1, "a": 1.50, "z": 2, "big": 12345678901234567890}'
        assert c.post(items_url(ds["id"]), content=raw, headers={"content-type": "application/json"}).status_code == 201
        r = c.get(items_url(ds["id"]))
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert "content-length" not in r.headers  # streamed
        items = r.json()
        assert items == [{"a": 1, "é": "ü"}, {"b": [1, {"c": None}]}, {"#h": True}, {"z": 2, "a": 1.5, "big": 12345678901234567890}]
        assert list(items[3]) == ["z", "a", "big"]
        assert "\\u" not in r.text  # UTF-8, not escapes
        got = c.get(f"/v2/datasets/{ds['id']}").json()["data"]
        assert got["itemCount"] == 4 and got["cleanItemCount"] == 3
        assert got["fields"] == ["a", "é", "b", "#h", "z", "big"]
        assert got["consoleUrl"].endswith(f"/console/#/datasets/{ds['id']}")
        assert got["modifiedAt"] >= ds["modifiedAt"]


def test_fields_leave_out_keys_longer_than_a_column_name(shared_server):
    """The dataset object's ``fields`` (4.3: at most the first 2,000 keys) leaves out keys of over 200 characters,
    as export columns do: a key may be as long as a push body, and five pushes of a 2 MB key made the dataset
    object a 10 MB answer, read again by every push. The items themselves keep them."""
    long_key = "k" * 2_000_000
    with shared_server.client() as c:
        ds = new_dataset(c)
        for i in range(5):
            r = c.post(items_url(ds["id"]), json=[{f"{i}{long_key}": 1, "short": i, "x" * 200: True}])
            assert r.status_code == 201, r.text
        r = c.get(f"/v2/datasets/{ds['id']}")
        assert r.json()["data"]["fields"] == ["short", "x" * 200]
        assert len(r.content) < 100_000
        items = c.get(items_url(ds["id"])).json()
        assert [len(item) for item in items] == [3] * 5 and f"4{long_key}" in items[4]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": ', "Invalid input: The request body contains invalid data."),
        (b"[1]", "Invalid input: Item at index 0 is not a JSON object."),
        (b'[{"a":1},{"b":2},"x",{"c":3}]', "Invalid input: Item at index 2 is not a JSON object."),
        (b'"text"', None),
        (b"42", None),
        (b'{"a": NaN}', None),
        (b"", None),
        (b"[" * 129 + b"]" * 129, "Invalid input: JSON nested more than 128 levels deep."),
        (b'{"a": "\\ud800"}', None),
        (b'{"a": "\xff"}', None),
    ],
)
def test_bad_push_bodies_store_nothing(sqlite_server, body, message):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        r = c.post(items_url(ds["id"]), content=body, headers={"content-type": "application/json"})
        assert_error(r, 400, "invalid-input", message)
        assert c.get(f"/v2/datasets/{ds['id']}").json()["data"]["itemCount"] == 0


def test_deep_but_allowed_nesting_is_stored(sqlite_server):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        deep = b'{"a":' + b"[" * 126 + b"]" * 126 + b"}"  # 127 levels with the object
        assert c.post(items_url(ds["id"]), content=deep).status_code == 201


def test_push_limits_are_on_the_decoded_body(sqlite_server):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        item = {"pad": "x" * (LIMIT - 20)}
        body = json.dumps(item).encode()
        assert len(body) <= LIMIT
        r = c.post(items_url(ds["id"]), content=gzip.compress(body), headers={"content-encoding": "gzip"})
        assert r.status_code == 201, r.text
        over = json.dumps({"pad": "x" * LIMIT}).encode()
        assert_error(c.post(items_url(ds["id"]), content=over), 413, "request-too-large")
        bomb = deflated_spaces(b"[", 64 * LIMIT >> 20, b"]")  # small on the wire, 576 MiB decoded
        assert len(bomb) < 1_000_000
        r = c.post(items_url(ds["id"]), content=bomb, headers={"content-encoding": "deflate"})
        assert_error(r, 413, "request-too-large")
        assert_error(
            c.post(items_url(ds["id"]), content=b"{}", headers={"content-encoding": "zstd"}),
            415, "unsupported-content-encoding",
        )
        assert c.get(f"/v2/datasets/{ds['id']}").json()["data"]["itemCount"] == 1


def test_push_content_type_must_be_json(sqlite_server):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        r = c.post(items_url(ds["id"]), content=b"{}", headers={"content-type": "text/plain"})
        assert_error(r, 400, "invalid-content-type-header", "Invalid Content-Type header: expected application/json.")
        r = c.post(items_url(ds["id"]), content=b"{}", headers={"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 201


def test_pagination_headers_and_selection(shared_server):
    with shared_server.client() as c:
        ds = new_dataset(c)
        assert c.post(items_url(ds["id"]), json=[{"i": i} for i in range(10)]).status_code == 201

        def page(**params):
            r = c.get(items_url(ds["id"]), params=params)
            assert r.status_code == 200, r.text
            h = r.headers
            head = (
                int(h["x-apify-pagination-offset"]), int(h["x-apify-pagination-limit"]),
                int(h["x-apify-pagination-count"]), int(h["x-apify-pagination-total"]), h["x-apify-pagination-desc"],
            )
            return [it["i"] for it in r.json()], head

        assert page() == (list(range(10)), (0, 999999999999, 10, 10, "false"))
        assert page(offset=3, limit=4) == ([3, 4, 5, 6], (3, 4, 4, 10, "false"))
        assert page(offset=8, limit=5) == ([8, 9], (8, 5, 2, 10, "false"))
        assert page(offset=20) == ([], (20, 999999999999, 0, 10, "false"))
        assert page(desc=1, limit=3) == ([9, 8, 7], (0, 3, 3, 10, "true"))
        assert page(desc="true", offset=8) == ([1, 0], (8, 999999999999, 2, 10, "true"))
        assert page(limit=0)[1][1] == 999999999999
        r = c.head(items_url(ds["id"]), params={"offset": 2})
        assert r.status_code == 200 and r.content == b""
        assert r.headers["x-apify-pagination-count"] == "8"
        for bad in ({"offset": "-1"}, {"limit": "1.5"}, {"offset": "1e3"}, {"format": "pdf"}, {"limit": "+3"}):
            assert_error(c.get(items_url(ds["id"]), params=bad), 400, "invalid-input")


def test_jsonl_and_empty_outputs(sqlite_server):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        r = c.get(items_url(ds["id"]))
        assert r.content == b"[]"
        assert c.get(items_url(ds["id"]), params={"format": "jsonl"}).content == b""
        assert_error(c.get(items_url(ds["id"]), params={"format": "csv"}), 400, "no-columns-in-exported-dataset")
        c.post(items_url(ds["id"]), json=[{"a": 1}, {"b": "x"}])
        r = c.get(items_url(ds["id"]), params={"format": "JSONL"})
        assert r.content == b'{"a":1}\n{"b":"x"}\n'
        assert r.headers["content-type"] == "application/jsonl; charset=utf-8"
        r = c.get(items_url(ds["id"]), params={"attachment": "1", "format": "csv"})
        assert r.headers["content-disposition"] == f'attachment; filename="{ds["name"]}.csv"'
        assert r.headers["x-content-type-options"] == "nosniff"


def test_access_and_signatures(shared_server):
    bob = shared_server.extra_tokens["bob"]
    with shared_server.client() as c, shared_server.client(bob) as b, shared_server.anon() as anon:
        ds = new_dataset(c)
        did = ds["id"]
        c.post(items_url(did), json={"a": 1})
        assert_error(anon.get(items_url(did)), 401, "token-not-provided")
        assert_error(b.get(items_url(did)), 403, "permission-denied")
        assert_error(b.post(items_url(did), json={"a": 2}), 403, "permission-denied")
        assert_error(b.get(f"/v2/datasets/alice~{ds['name']}"), 404, "record-not-found")
        signed = ds["itemsPublicUrl"]
        assert signed.startswith(f"{shared_server.url}/v2/datasets/{did}/items?signature=")
        r = httpx.get(signed + "&format=jsonl", timeout=30)
        assert r.status_code == 200 and r.content == b'{"a":1}\n'
        assert httpx.head(signed, timeout=30).status_code == 200
        sig = signed.split("signature=")[1]
        # by username~name too, with the dataset's real ID in the signature
        assert anon.get(f"/v2/datasets/alice~{ds['name']}/items", params={"signature": sig}).status_code == 200
        tampered = sig[:-2] + ("yy" if sig.endswith("xx") else "xx")  # (1 in 4,096 signatures ends in "xx" itself)
        assert_error(anon.get(items_url(did), params={"signature": tampered}), 403, "permission-denied")
        # a signature opens only reads of the items: not a push, not the dataset object
        assert_error(anon.post(items_url(did), params={"signature": sig}, json={}), 403, "permission-denied")
        assert_error(anon.get(f"/v2/datasets/{did}", params={"signature": sig}), 403, "permission-denied")
        r = c.put(f"/v2/datasets/{did}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"})
        assert r.status_code == 200, r.text
        assert anon.get(items_url(did)).json() == [{"a": 1}]
        assert "urlSigningSecretKey" not in anon.get(f"/v2/datasets/{did}").json()["data"]
        assert_error(anon.post(items_url(did), json={}), 401, "token-not-provided")
        assert_error(c.get("/v2/datasets/AAAAAAAAAAAAAAAAA/items"), 404, "record-not-found", "Dataset was not found")


def test_methods(sqlite_server):
    with sqlite_server.client() as c:
        ds = new_dataset(c)
        r = c.delete(items_url(ds["id"]))
        assert_error(r, 405, "method-not-allowed")
        assert_error(c.post(f"/v2/datasets/{ds['id']}/statistics"), 405, "method-not-allowed")
        r = c.options(items_url(ds["id"]), headers={"origin": "https://x.example", "access-control-request-method": "GET"})
        assert r.status_code in (200, 204)
        r = c.get(items_url(ds["id"]), headers={"origin": "https://x.example"})
        exposed = r.headers["access-control-expose-headers"]
        for h in ("X-Apify-Pagination-Total", "X-Apify-Pagination-Desc", "Content-Disposition"):
            assert h in exposed


def test_export_is_a_snapshot_of_its_arrival(shared_server):
    with shared_server.client() as c:
        ds = new_dataset(c)
        did = ds["id"]
        for _ in range(3):
            c.post(items_url(did), json=[{"i": i, "pad": "p" * 1000} for i in range(1000)])
        # over the socket (the in-process client gets a response whole): the export streams while we act
        sock = httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Bearer {shared_server.token}"},
                            timeout=60)  # httpx's 5 s default failed under load
        with sock, sock.stream("GET", items_url(did), params={"format": "jsonl"}) as r:
            assert r.headers["x-apify-pagination-total"] == "3000"
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert first["i"] == 0
            # pushed, then the dataset deleted, while the export runs: neither changes what it sends
            assert c.post(items_url(did), json={"late": True}).status_code == 201
            assert c.delete(f"/v2/datasets/{did}").status_code == 204
            rest = [json.loads(line) for line in lines if line]
        assert len(rest) == 2999 and all("late" not in x for x in rest)
        assert_error(c.get(items_url(did)), 404, "record-not-found")


def test_statistics(shared_server):
    schema = {
        "actorSpecification": 1,
        "fields": {"type": "object", "properties": {"price": {"type": "number"}, "name": {"type": ["string", "null"]}}},
        "views": {"overview": {"title": "Overview", "transformation": {"fields": ["name"]}}},
    }
    with shared_server.client() as c:
        ds = new_dataset(c, schema=schema)
        assert ds["schema"] == schema
        did = ds["id"]
        r = c.post(items_url(did), json=[{"price": 3, "name": "ab"}, {"price": "x"}, {"name": 5}])
        err = assert_error(r, 400, "schema-validation-error", "Schema validation failed")
        invalid = r.json()["error"]["data"]["invalidItems"]
        assert [x["itemPosition"] for x in invalid] == [1, 2]
        first = invalid[0]["validationErrors"][0]
        assert first["instancePath"] == "/price" and first["keyword"] == "type"
        assert first["schemaPath"] == "#/properties/price/type" and first["params"] == {"type": "number"}
        assert err["message"] == "Schema validation failed"
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == 0
        assert c.post(items_url(did), json=[{"price": 3, "name": "ab"}, {"price": 1.5, "name": None}, {}]).status_code == 201
        stats = c.get(f"/v2/datasets/{did}/statistics").json()["data"]["fieldStatistics"]
        assert stats["price"] == {"min": 1.5, "max": 3, "nullCount": 0, "emptyCount": 1}
        assert stats["name"] == {"min": 2, "max": 2, "nullCount": 1, "emptyCount": 1}
        assert c.get(items_url(did), params={"view": "overview"}).json() == [{"name": "ab"}, {"name": None}, {}]
        assert_error(c.get(items_url(did), params={"view": "nope"}), 400, "requested-dataset-view-does-not-exist")
        bad = c.post("/v2/datasets", params={"name": unique("ds")}, json={"schema": {"actorSpecification": 2}})
        assert_error(bad, 400, "dataset-schema-invalid")
        plain = new_dataset(c)
        assert c.get(f"/v2/datasets/{plain['id']}/statistics").json() == {"data": {"fieldStatistics": None}}
        assert_error(c.get(items_url(plain["id"]), params={"view": "x"}), 400, "dataset-does-not-have-schema")
