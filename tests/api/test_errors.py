"""Every status, type and message the store/record/key endpoints give, checked on the wire (API.md 1-2, 5),
plus the headers every response carries (CORS, X-RateLimit-Limit) and the CORS preflight."""

from __future__ import annotations

import gzip

import pytest

from . import assert_error, new_store, raw_request, rec_path, unique

NOT_PROVIDED = ("token-not-provided", "Authentication token was not provided")
NOT_VALID = ("token-not-valid", "Authentication token is not valid.")
DENIED = ("permission-denied", "You do not have permission to perform this action.")
NO_STORE = ("record-not-found", "Key-value Store was not found")
NO_RECORD = ("record-not-found", "Record was not found")
NO_PAGE = ("page-not-found", None)


def m405(*methods: str) -> tuple[str, str]:
    return (
        "method-not-allowed",
        "This API end-point can only be accessed using the following HTTP methods: " + ",".join(["OPTIONS", *methods]),
    )


@pytest.fixture(scope="module")
def world(shared_server):
    """alice's store (with a record 'rec'), its name, and the tokens."""
    with shared_server.client() as c:
        name = unique("err")
        store = new_store(c, name)
        assert c.put(rec_path(store["id"], "rec"), content=b"0123456789").status_code == 201
    return {
        "id": store["id"],
        "name": name,
        "alice": shared_server.token,
        "bob": shared_server.extra_tokens["bob"],
    }


# (who, method, path, extra request kwargs, status, (type, message)); {id} / {name} are alice's store
CASES = [
    # authentication
    ("anon", "GET", "/v2/key-value-stores", {}, 401, NOT_PROVIDED),
    ("anon", "POST", "/v2/key-value-stores?name=x", {}, 401, NOT_PROVIDED),
    ("anon", "GET", "/v2/key-value-stores/~{name}", {}, 401, NOT_PROVIDED),
    ("anon", "GET", "/v2/key-value-stores/{id}", {}, 401, NOT_PROVIDED),
    ("anon", "GET", "/v2/key-value-stores/{id}/keys", {}, 401, NOT_PROVIDED),
    ("anon", "GET", "/v2/key-value-stores/{id}/records/rec", {}, 401, NOT_PROVIDED),
    ("anon", "PUT", "/v2/key-value-stores/{id}/records/rec", {"content": b"x"}, 401, NOT_PROVIDED),
    ("anon", "GET", "/v2/key-value-stores/alice~{name}", {}, 404, NO_STORE),
    ("bad", "GET", "/v2/key-value-stores", {}, 401, NOT_VALID),
    ("bad", "GET", "/v2/key-value-stores/{id}/records/rec", {}, 401, NOT_VALID),
    ("badquery", "GET", "/v2/key-value-stores", {}, 401, NOT_VALID),
    # another user
    ("bob", "GET", "/v2/key-value-stores/{id}", {}, 403, DENIED),
    ("bob", "PUT", "/v2/key-value-stores/{id}", {"json": {"name": "stolen"}}, 403, DENIED),
    ("bob", "DELETE", "/v2/key-value-stores/{id}", {}, 403, DENIED),
    ("bob", "GET", "/v2/key-value-stores/{id}/keys", {}, 403, DENIED),
    ("bob", "GET", "/v2/key-value-stores/{id}/records/rec", {}, 403, DENIED),
    ("bob", "PUT", "/v2/key-value-stores/{id}/records/rec", {"content": b"x"}, 403, DENIED),
    ("bob", "DELETE", "/v2/key-value-stores/{id}/records/rec", {}, 403, DENIED),
    ("bob", "GET", "/v2/key-value-stores/alice~{name}", {}, 404, NO_STORE),
    ("bob", "GET", "/v2/key-value-stores/alice~{name}/records/rec", {}, 404, NO_STORE),
    ("bob", "GET", "/v2/key-value-stores/~{name}", {}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/{id}/keys?signature=AAAA", {}, 200, None),
    ("anon", "GET", "/v2/key-value-stores/{id}/keys?signature=AAAA", {}, 403, DENIED),
    ("anon", "GET", "/v2/key-value-stores/{id}/keys?signature=%FF%FE", {}, 403, DENIED),
    ("anon", "GET", "/v2/key-value-stores/{id}/keys?signature=" + "A" * 5000, {}, 403, DENIED),
    ("anon", "GET", "/v2/key-value-stores/{id}/records/rec?signature=MC4wLjA", {}, 403, DENIED),
    # missing things
    ("alice", "GET", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA", {}, 404, NO_STORE),
    ("alice", "PUT", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA", {"json": {}}, 404, NO_STORE),
    ("alice", "DELETE", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA", {}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA/keys", {}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA/records/x", {}, 404, NO_STORE),
    ("alice", "PUT", "/v2/key-value-stores/AAAAAAAAAAAAAAAAA/records/x", {"content": b"x"}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/~no-such-store", {}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/nobody~x", {}, 404, NO_STORE),
    ("alice", "GET", "/v2/key-value-stores/{name}", {}, 404, NO_STORE),  # a bare name is an ID
    ("alice", "GET", "/v2/key-value-stores/{id}/records/missing", {}, 404, NO_RECORD),
    ("alice", "GET", "/v2/nope", {}, 404, NO_PAGE),
    ("alice", "POST", "/v2/nope", {}, 404, NO_PAGE),
    ("alice", "PUT", "/v2/key-value-stores/{id}/nope", {"content": b"x"}, 404, NO_PAGE),
    ("alice", "DELETE", "/nope", {}, 404, NO_PAGE),
    ("alice", "GET", "/console/no-such-file.js", {}, 404, NO_PAGE),
    ("alice", "GET", "/v2/key-value-stores/", {}, 404, NO_PAGE),
    # methods
    ("alice", "POST", "/v2/key-value-stores/{id}/records", {}, 405, m405("GET")),
    ("anon", "DELETE", "/v2/key-value-stores/{id}/records", {}, 405, m405("GET")),
    ("alice", "PATCH", "/v2/key-value-stores/{id}/records/rec", {}, 405, m405("GET", "PUT", "POST", "DELETE")),
    ("alice", "PATCH", "/v2/key-value-stores/{id}", {}, 405, m405("GET", "PUT", "DELETE")),
    ("alice", "POST", "/v2/key-value-stores/{id}", {}, 405, m405("GET", "PUT", "DELETE")),
    ("alice", "DELETE", "/v2/key-value-stores", {}, 405, m405("GET", "POST")),
    ("alice", "PUT", "/v2/key-value-stores/{id}/keys", {}, 405, m405("GET")),
    # bad input
    ("alice", "GET", "/v2/key-value-stores?limit=-1", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores?desc=yes", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores?ownership=mine", {}, 400, ("invalid-input", None)),
    ("alice", "POST", "/v2/key-value-stores?name=bad_name", {}, 400, ("invalid-input", None)),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"content": b"[]"}, 400, ("invalid-input", None)),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"content": b"{"}, 400, ("invalid-input", "Invalid input: The request body contains invalid data.")),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"content": b"\xff\xfe"}, 400, ("invalid-input", None)),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"content": b"not gzip", "headers": {"content-encoding": "gzip"}}, 400, ("invalid-input", None)),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"content": b"{}", "headers": {"content-encoding": "zstd"}}, 415, ("unsupported-content-encoding", 'Content-Encoding "zstd" is not supported.')),
    ("alice", "POST", "/v2/key-value-stores?name=x", {"json": {"schema": 5}}, 400, ("store-schema-invalid", None)),
    ("alice", "PUT", "/v2/key-value-stores/{id}", {"content": b"null"}, 400, ("invalid-input", None)),
    ("alice", "PUT", "/v2/key-value-stores/{id}", {"json": {"name": 5}}, 400, ("invalid-input", None)),
    ("alice", "PUT", "/v2/key-value-stores/{id}", {"json": {"schema": {"actorKeyValueStoreSchemaVersion": 2}}}, 400, ("store-schema-invalid", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/keys?limit=-1", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/keys?exclusiveStartKey=a%00", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/keys?prefix=%00", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores?offset=99999999999999999999999", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/keys?collection=c", {}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/records/a$b", {}, 400, ("invalid-record-key", "Record key contains invalid character")),
    ("alice", "PUT", "/v2/key-value-stores/{id}/records/" + "k" * 257, {"content": b"x"}, 400, ("invalid-record-key", None)),
    ("alice", "PUT", "/v2/key-value-stores/{id}/records/rec2", {"content": b"x", "headers": {"content-encoding": "compress"}}, 415, ("unsupported-content-encoding", 'Content-Encoding "compress" is not supported.')),
    ("alice", "PUT", "/v2/key-value-stores/{id}/records/rec2", {"content": b"x", "headers": {"content-encoding": "gzip"}}, 400, ("invalid-input", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/records/rec", {"headers": {"range": "bytes=50-60"}}, 416, ("invalid-range", None)),
    ("alice", "GET", "/v2/key-value-stores/{id}/records/rec?attachment=2", {}, 400, ("invalid-input", None)),
]


def _ids(case):
    return f"{case[0]}-{case[1]}-{case[2]}-{case[4]}"[:90]


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_error_table(shared_server, world, case):
    who, method, path, kw, status, expected = case
    path = path.format(id=world["id"], name=world["name"])
    kw = dict(kw)  # CASES is shared between the backends: don't change it
    headers = dict(kw.pop("headers", {}))
    if who in ("alice", "bob"):
        headers["Authorization"] = f"Bearer {world[who]}"
    elif who == "bad":
        headers["Authorization"] = "Bearer okvs_not-a-real-token"
    elif who == "badquery":
        path += ("&" if "?" in path else "?") + "token=okvs_not-a-real-token"
    with shared_server.anon() as c:
        r = c.request(method, path, headers=headers, **kw)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-ratelimit-limit" in r.headers
    if expected is None:
        assert r.status_code == status, r.text
        return
    type_, message = expected
    assert_error(r, status, type_, message)
    if status == 405:  # Allow: the message's list, and HEAD wherever GET is served
        assert r.headers["allow"] == message.rsplit(" ", 1)[1].replace("GET", "GET,HEAD")
    if status == 416:
        assert r.headers["content-range"] == "bytes */10"
    if status == 400 and type_ == "invalid-input":
        assert r.json()["error"]["message"].startswith("Invalid input: ")


def test_record_not_changed_by_failed_requests(shared_server, world):
    with shared_server.client() as c:
        assert c.get(rec_path(world["id"], "rec")).content == b"0123456789"
        assert c.get(rec_path(world["id"], "rec2")).status_code == 404
        assert c.get(f"/v2/key-value-stores/{world['id']}").json()["data"]["name"] == world["name"]


def test_query_token_works_and_header_wins(shared_server, world):
    with shared_server.anon() as c:
        r = c.get("/v2/key-value-stores", params={"token": world["alice"]})
        assert r.status_code == 200
        r = c.get(f"/v2/key-value-stores/{world['id']}", params={"token": world["bob"]}, headers={"Authorization": f"Bearer {world['alice']}"})
        assert r.status_code == 200


def test_head_errors_have_no_body(shared_server, world):
    with shared_server.client() as c:
        r = c.head(rec_path(world["id"], "missing"))
        assert r.status_code == 404 and r.content == b""
        assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "path,allowed",
    [
        ("/v2/key-value-stores", "OPTIONS,GET,HEAD,POST"),
        ("/v2/key-value-stores/{id}", "OPTIONS,GET,HEAD,PUT,DELETE"),
        ("/v2/key-value-stores/{id}/keys", "OPTIONS,GET,HEAD"),
        ("/v2/key-value-stores/{id}/records", "OPTIONS,GET,HEAD"),
        ("/v2/key-value-stores/{id}/records/rec", "OPTIONS,GET,HEAD,PUT,POST,DELETE"),
    ],
)
def test_cors_preflight(shared_server, world, path, allowed):
    with shared_server.anon() as c:
        r = c.options(
            path.format(id=world["id"]),
            headers={
                "Origin": "https://example.com",
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert r.status_code in (200, 204), r.text
    assert r.headers["access-control-allow-origin"] == "*"
    methods = [m.strip() for m in r.headers["access-control-allow-methods"].split(",")]
    assert methods == allowed.split(",")
    allow_headers = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding", "range", "if-range", "if-none-match"} <= allow_headers
    assert "x-ratelimit-limit" in r.headers


def test_common_headers_on_success(shared_server, world):
    with shared_server.client() as c:
        for r in (
            c.get("/v2/key-value-stores"),
            c.get(f"/v2/key-value-stores/{world['id']}"),
            c.get(f"/v2/key-value-stores/{world['id']}/keys"),
            c.get(rec_path(world["id"], "rec")),
            c.head(rec_path(world["id"], "rec")),
            c.put(rec_path(world["id"], "other"), content=b"1"),
            c.delete(rec_path(world["id"], "other")),
        ):
            assert r.status_code < 300, r.text
            assert r.headers["access-control-allow-origin"] == "*"
            expose = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
            assert {"content-length", "content-range", "etag", "location", "x-ratelimit-limit"} <= expose
            assert int(r.headers["x-ratelimit-limit"]) > 0


def test_rate_limit_429(tmp_path, start_server):
    from tests.ratelimit.helpers import FakeClock

    clock = FakeClock()  # the limiter's time stands still but when moved: the burst's count is exact
    s = start_server(tmp_path, "sqlite", env_extra={"OPENKVS_RATE_LIMIT_RECORDS_PER_SECOND": "3"}, in_process=True,
                     clock=clock)
    with s.client() as c:
        sid = new_store(c)["id"]
        rs = [c.get(rec_path(sid, "k")) for _ in range(5)]
        assert [r.status_code for r in rs] == [404, 404, 404, 429, 429]
        r = rs[-1]
        assert_error(r, 429, "rate-limit-exceeded", "You have exceeded the rate limit. Please try again later.")
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-limit"] == "3"
        clock.advance(int(r.headers["retry-after"]))
        assert c.get(rec_path(sid, "k")).status_code == 404


def test_no_tracebacks_in_responses_or_log(shared_server, world):
    """Garbage of many kinds: never a 500, and nothing unexpected in the server's log."""
    auth = {"Authorization": f"Bearer {world['alice']}"}
    sid = world["id"]
    probes = [
        ("GET", f"/v2/key-value-stores/{sid}/records/rec?signature=%00", {}),
        ("GET", f"/v2/key-value-stores/{sid}/keys?signature=====", {}),
        ("GET", f"/v2/key-value-stores/{sid}/keys?exclusiveStartKey=%00&limit=1", auth),
        ("GET", f"/v2/key-value-stores/{sid}/keys?prefix=%FF", auth),
        ("GET", "/v2/key-value-stores?offset=99999999999999999999999", auth),
        ("GET", "/v2/key-value-stores?limit=99999999999999999999999", auth),
        ("GET", f"/v2/key-value-stores/{sid}/records/rec", {**auth, "Range": "bytes=garbage"}),
        ("GET", f"/v2/key-value-stores/{sid}/records/rec", {**auth, "Range": "bytes=5-2"}),
        ("GET", f"/v2/key-value-stores/{sid}/records/rec", {**auth, "If-None-Match": "\x7f"}),
        ("GET", "/v2/key-value-stores/%00", auth),
        ("GET", "/v2/key-value-stores/~", auth),
        ("GET", "/v2/key-value-stores/a~", auth),
        ("GET", "/v2/key-value-stores/" + "x" * 5000, auth),
        ("PUT", f"/v2/key-value-stores/{sid}/records/x", {**auth, "Content-Length": "abc"}),
        ("GET", "/v2/key-value-stores", {"Authorization": "Bearer"}),
        ("GET", "/v2/key-value-stores", {"Authorization": "Basic Zm9vOmJhcg=="}),
    ]
    for method, path, headers in probes:
        try:
            r = raw_request(shared_server.url, method, path, None, headers)
        except Exception:  # a malformed request the HTTP server itself refuses is fine
            continue
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        assert "Traceback" not in r.text
    with shared_server.client() as c:
        r = c.put(
            rec_path(sid, "gz"),
            content=gzip.compress(b"ok") + b"trailing garbage",
            headers={"content-encoding": "gzip"},
        )
        assert r.status_code in (201, 400), r.text
    log = shared_server.log()
    assert "Traceback" not in log, log[-5000:]
    assert world["alice"] not in log and world["bob"] not in log
