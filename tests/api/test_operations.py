"""Operating a server (issue 17): /health/live and /health/ready, /metrics, the access log and X-Request-Id, end to
end: on real server processes where the test reads what is per process, else on the server in this process."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATABASE_URL, TLS, Server

# A real process where a test reads the metrics registry or the access log: both are per process (in process, every
# server in the test run would share one registry), as are the HTTP protocol's trusted proxies and the workers. Such
# a test's `server` is marked PER_PROCESS, its start_server is a process (make_server's default); the other tests
# run on the server in this process.
PER_PROCESS = pytest.mark.server_process

RECORD_ROUTE = "/v2/key-value-stores/{store_id}/records/{key:key}"


def _until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _requests(samples: Samples, route: str, method: str, status: str) -> float:
    key = ("openkvs_http_requests_total", frozenset({"route": route, "method": method, "status": status}.items()))
    return samples.get(key, 0.0)


def _store(server: Server, name: str) -> str:
    with server.client() as c:
        r = c.post("/v2/key-value-stores", params={"name": name})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["data"]["id"])


# -- health ------------------------------------------------------------------------------------------------------


def test_health_needs_no_token_and_tells_nothing_about_stores(server: Server) -> None:
    store_id = _store(server, "secret-name")
    with server.anon() as c:
        live = c.get("/health/live")
        ready = c.get("/health/ready")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok" and ready.json()["checks"]["storage"] == "ok"
    for r in (live, ready):
        assert "secret-name" not in r.text and store_id not in r.text
        assert r.headers["cache-control"] == "no-store"


def test_health_is_not_rate_limited(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "on", "--rate-limit-user-per-minute", "60", in_process=True)
    with s.anon() as c:
        probes = [c.get("/v2/key-value-stores/aaaaaaaaaaaaaaaaa").status_code for _ in range(30)]
        assert 429 in probes  # an anonymous client's budget is spent...
        assert [c.get("/health/ready").status_code for _ in range(30)] == [200] * 30  # ...health still answers
        assert [c.get("/health/live").status_code for _ in range(30)] == [200] * 30


def test_ready_is_503_with_the_reason_when_the_schema_is_not_migrated(server: Server, backend: str) -> None:
    if backend == "sqlite":
        with sqlite3.connect(server.data_dir / "openkvs.sqlite3") as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            db.execute(f"PRAGMA user_version = {version - 1}")
    else:
        import asyncio

        import asyncpg

        async def bump() -> None:
            conn = await asyncpg.connect(DATABASE_URL)
            schema = server.env["OPENKVS_DATABASE_SCHEMA"]
            await conn.execute(f'UPDATE "{schema}".schema_version SET version = version - 1')
            await conn.close()

        asyncio.run(bump())
    with server.anon() as c:
        _until(lambda: c.get("/health/ready").status_code == 503)
        body = c.get("/health/ready").json()
        assert c.get("/health/live").status_code == 200
    assert body["status"] == "unavailable"
    assert "not migrated" in body["reason"] and "openkvs migrate" in body["reason"]


def test_ready_is_503_when_redis_is_configured_and_down(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(
        tmp_path, "sqlite", "--redis-url", "redis://127.0.0.1:1/0", "--redis-timeout", "0.5", in_process=True
    )
    with s.anon() as c:
        r = c.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["checks"] == {"storage": "ok", "redis": "unreachable"}
    assert "redis unreachable" in r.json()["reason"]


# -- metrics -----------------------------------------------------------------------------------------------------


@PER_PROCESS  # the metrics registry
def test_metrics_need_any_valid_token_and_count_requests_by_route(server: Server) -> None:
    store_id = _store(server, "metered")
    bob = server.new_user("bob")  # owns nothing: any valid token may read the metrics
    with server.client() as c:
        assert c.put(f"/v2/key-value-stores/{store_id}/records/k", content=b"x" * 1000).status_code == 201
        for _ in range(3):
            assert c.get(f"/v2/key-value-stores/{store_id}/records/k").status_code == 200
        assert c.get(f"/v2/key-value-stores/{store_id}/records/missing").status_code == 404
    with server.anon() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer okvs_not-a-token"}).status_code == 401
        r = c.get("/metrics", headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert _requests(samples, RECORD_ROUTE, "GET", "200") == 3
    assert _requests(samples, RECORD_ROUTE, "GET", "404") == 1
    assert _requests(samples, RECORD_ROUTE, "PUT", "201") == 1
    count = ("openkvs_http_request_duration_seconds_count", frozenset({"route": RECORD_ROUTE, "method": "GET"}.items()))
    assert samples[count] == 4
    assert store_id not in r.text and "metered" not in r.text  # route templates only, no IDs, names or keys


def test_zip_bytes_and_rate_limit_refusals_are_counted(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "on", "--rate-limit-records-per-second", "1",
                     "--metrics", "public")  # a process: the metrics registry
    store_id = _store(s, "zipped")
    with s.client() as c:
        c.put(f"/v2/key-value-stores/{store_id}/records/a", content=b"a" * 5000)
        zipped = c.get(f"/v2/key-value-stores/{store_id}/records")
        assert zipped.status_code == 200
        statuses = [c.get(f"/v2/key-value-stores/{store_id}/records/a").status_code for _ in range(10)]
    assert 429 in statuses
    with s.anon() as c:  # --metrics public: no token
        samples = _samples(c.get("/metrics").text)
    assert samples[("openkvs_zip_bytes_sent_total", frozenset())] == len(zipped.content)
    assert samples[("openkvs_downloads_open", frozenset())] == 0
    limited = ("openkvs_rate_limited_total", frozenset({"route": RECORD_ROUTE}.items()))
    assert samples[limited] == statuses.count(429)


def test_metrics_off_is_404(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--metrics", "off", in_process=True)
    with s.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 404 and r.json()["error"]["type"] == "page-not-found"


def test_metrics_add_up_over_workers(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--workers", "2", "--rate-limits", "off")  # a process, with two workers
    for _ in range(20):  # a new connection each: the kernel spreads them over both workers
        assert httpx.get(s.url + "/health/live", verify=TLS).status_code == 200
    with s.client() as c:

        def counted() -> bool:
            samples = _samples(c.get("/metrics").text)
            return _requests(samples, "/health/live", "GET", "200") == 20

        _until(counted)  # each worker moves its counts into the shared files within a second


# -- the access log ----------------------------------------------------------------------------------------------


def _log_lines(server: Server, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if needle in line]


@PER_PROCESS  # the access log
def test_access_log_line_has_what_an_operator_needs(server: Server) -> None:
    store_id = _store(server, "logged")
    with server.client() as c:
        c.put(f"/v2/key-value-stores/{store_id}/records/k", content=b"y" * 321)
        r = c.get(f"/v2/key-value-stores/{store_id}/records/k", params={"signature": "sig-secret", "x": "1"})
        user_id = c.get("/v2/key-value-stores", params={"limit": 1}).json()["data"]["items"][0]["userId"]
    request_id = r.headers["x-request-id"]
    _until(lambda: bool(_log_lines(server, request_id)))
    (line,) = _log_lines(server, request_id)
    # time, request id, client, user, request line (signature redacted), status, bytes, duration
    assert line.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    fields = line.split(" ")
    assert fields[1] == request_id and fields[2] == "127.0.0.1" and fields[3] == user_id
    assert f'"GET /v2/key-value-stores/{store_id}/records/k?signature=REDACTED&x=1 HTTP/1.1" 200 321 ' in line
    assert fields[-1].endswith("ms") and float(fields[-1][:-2]) >= 0
    assert "sig-secret" not in server.log()
    assert "uvicorn" not in server.log() or '" 200 OK' not in server.log()  # uvicorn's own access line is gone


def test_json_access_log_and_request_id_from_a_trusted_proxy(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    s = start_server(tmp_path, "sqlite", "--log-format", "json", "--trusted-proxies", "127.0.0.1")  # a process
    with s.anon() as c:
        proxy_headers = {"X-Request-Id": "edge-42", "X-Forwarded-For": "203.0.113.9"}
        proxied = c.get("/health/live?token=tok-secret", headers=proxy_headers)
        forged = c.get("/health/live", headers={"X-Request-Id": "bad id \"quoted\""})
    assert proxied.headers["x-request-id"] == "edge-42"
    assert forged.headers["x-request-id"] != "bad id \"quoted\""
    _until(lambda: bool(_log_lines(s, "edge-42")))
    entry = json.loads(_log_lines(s, "edge-42")[0])
    assert entry["request_id"] == "edge-42" and entry["client"] == "203.0.113.9" and entry["user"] == "-"
    assert entry["method"] == "GET" and entry["path"] == "/health/live?token=REDACTED"
    assert entry["status"] == 200 and entry["bytes"] == len(proxied.content) and entry["duration_ms"] >= 0
    assert "tok-secret" not in s.log()


def test_request_id_of_an_untrusted_client_is_not_taken(server: Server) -> None:
    with server.anon() as c:
        r = c.get("/health/live", headers={"X-Request-Id": "client-chosen"})
    assert r.headers["x-request-id"] != "client-chosen"
    assert r.headers["x-request-id"]


def test_no_access_log_at_warning(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--log-level", "warning")  # a process: its access log
    with s.anon() as c:
        rid = c.get("/health/live").headers["x-request-id"]
    time.sleep(0.5)
    assert rid not in s.log()


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health_allows_only_get(sqlite_server: Server, path: str) -> None:
    with sqlite_server.anon() as c:
        assert c.head(path).status_code == 200
        r = c.post(path)
    assert r.status_code == 405
