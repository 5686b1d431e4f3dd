"""Rate limits (API.md section 7) end to end: real servers, real sockets, real Redis.

Each budget is a token bucket holding one second's worth of its rate. The servers here take their buckets' time
from a clock the test moves by hand (``make_server(clock=)``, in this process): the clock stands still during a
burst, so exactly one bucket's worth gets through whatever the machine's speed, and a test waits by moving the
clock, never by sleeping. Only what needs its own processes runs on the real clock (``--workers``, trusted
proxies), with bounds that no amount of load can break.

    * 429 shape (type, exact message, Retry-After, X-RateLimit-Limit) for the record, store and user budgets
    * X-RateLimit-Limit on every response, errors included; the record and store budgets are separate
    * anonymous callers are counted per client IP; X-Forwarded-For only from --trusted-proxies
    * the official apify-client rides out 429s: a burst of writes all lands
    * two nodes (one PostgreSQL schema) share one Redis budget; Redis down: fail open; back: limits again
    * --workers N: refuses to start without --redis-url (decision), shares one budget with it
    * --rate-limits off: never 429, header still there
"""

from __future__ import annotations

import itertools
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, _release_schema, free_port, make_server, shared_redis_url
from tests.ratelimit.helpers import FakeClock, RedisServer

from . import assert_error, new_store, rec_path

MESSAGE = "You have exceeded the rate limit. Please try again later."


# -- helpers ---------------------------------------------------------------------------------------------------------


def assert_429(r: httpx.Response, limit: int) -> None:
    assert_error(r, 429, "rate-limit-exceeded", MESSAGE)
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, r.headers
    assert r.headers["x-ratelimit-limit"] == str(limit), r.headers


def burst(send: Callable[[], httpx.Response], n: int) -> list[httpx.Response]:
    """n requests back to back."""
    return [send() for _ in range(n)]


def statuses(rs: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in rs]


def ok(r: httpx.Response) -> bool:
    return 200 <= r.status_code < 300


def hammer(clients: list[httpx.Client], request: Callable[[httpx.Client, int], httpx.Response], seconds: float,
           threads_per_client: int = 4) -> tuple[Counter[int], float]:
    """Send requests as fast as possible from several threads per client for ``seconds``. Returns the status counts
    and the seconds from the first send to the last answer."""
    stop = time.monotonic() + seconds
    total: Counter[int] = Counter()
    lock = threading.Lock()
    seq = itertools.count()

    def work(i: int) -> None:
        c = clients[i]
        while time.monotonic() < stop:
            with lock:
                n = next(seq)
            status = request(c, n).status_code
            with lock:
                total[status] += 1

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(clients) * threads_per_client) as pool:
        for f in [pool.submit(work, i) for i in range(len(clients)) for _ in range(threads_per_client)]:
            f.result()
    return total, time.monotonic() - t0


def accepted(counts: Counter[int]) -> int:
    assert set(counts) <= {200, 201, 204, 429}, counts  # nothing else: no 5xx while limiting
    return sum(n for status, n in counts.items() if status != 429)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """``start(tmp_path, backend, *flags, **make_server_kw)``; every server started is stopped (and its schema
    dropped) at the end."""
    started: list[tuple[Server, str]] = []

    def start(tmp_path: Path, backend: str, *flags: str, **kw: Any) -> Server:
        s = make_server(tmp_path, backend, *flags, **kw)
        started.append((s, backend))
        return s

    yield start
    for s, _ in started:
        s.stop()
    for s, backend in started:
        if backend == "postgres":
            _release_schema(s.env["OPENKVS_DATABASE_SCHEMA"])


# -- the three budgets, one process ----------------------------------------------------------------------------------

RECORDS, STORE, USER_PER_MINUTE = 10, 3, 6000  # the user budget (100/s) is out of the way here


@pytest.fixture(scope="module")
def limited_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, limited_clock: FakeClock) -> Iterator[Server]:
    s = make_server(
        tmp_path_factory.mktemp("rl"), "sqlite",
        "--rate-limits", "on",
        "--rate-limit-records-per-second", str(RECORDS),
        "--rate-limit-store-per-second", str(STORE),
        "--rate-limit-user-per-minute", str(USER_PER_MINUTE),
        in_process=True, clock=limited_clock,
    )
    yield s
    s.stop()


@pytest.fixture
def limited(limited_server: Server, limited_clock: FakeClock) -> Server:
    """The server with every bucket full: an hour has passed since the last test."""
    limited_clock.advance(3600)
    limited_clock.tick = 0.0
    return limited_server


def test_record_burst_gets_429_with_retry_after_and_the_record_limit(limited: Server, limited_clock: FakeClock) -> None:
    with limited.client() as c:
        store = new_store(c)
        rs = burst(lambda: c.put(rec_path(store["id"], "k"), content=b"x"), 3 * RECORDS)
        # the clock stands still: the bucket (one second's worth) and not one request more
        assert statuses(rs) == [201] * RECORDS + [429] * (2 * RECORDS)
        for r in rs:
            assert r.headers["x-ratelimit-limit"] == str(RECORDS), r.headers
            if not ok(r):
                assert_429(r, RECORDS)
        # One token comes back in 1/10 s, announced in whole seconds, rounded up. Retry-After is enough: waiting it
        # out, the same request goes through; half a token is not enough.
        assert {r.headers["retry-after"] for r in rs if not ok(r)} == {"1"}
        limited_clock.advance(0.05)
        assert_429(c.get(rec_path(store["id"], "k")), RECORDS)
        limited_clock.advance(1 - 0.05)
        r = c.get(rec_path(store["id"], "k"))
        assert r.status_code == 200 and r.content == b"x", r.text


def test_owner_get_burst_is_limited_like_every_record_request(limited: Server) -> None:
    """The owner's plain GET of a small record, the cheapest request there is, spends the same budget and gets
    the same 429."""
    with limited.client() as c:
        store = new_store(c)
        assert c.put(rec_path(store["id"], "k"), content=b"x").status_code == 201  # one of the budget
        rs = burst(lambda: c.get(rec_path(store["id"], "k")), 3 * RECORDS)
        assert statuses(rs) == [200] * (RECORDS - 1) + [429] * (2 * RECORDS + 1)
        for r in rs:
            if ok(r):
                assert r.content == b"x" and r.headers["x-ratelimit-limit"] == str(RECORDS), r.headers
            else:
                assert_429(r, RECORDS)


def test_store_burst_gets_429_with_the_store_limit_and_records_have_their_own_budget(limited: Server) -> None:
    with limited.client() as c:
        store = new_store(c)
        rs = burst(lambda: c.get(f"/v2/key-value-stores/{store['id']}"), 4 * STORE)
        assert statuses(rs) == [200] * STORE + [429] * (3 * STORE)
        for r in rs:
            assert r.headers["x-ratelimit-limit"] == str(STORE), r.headers
            if not ok(r):
                assert_429(r, STORE)
        # The store budget is spent; record operations on the same store spend from their own.
        for key in ("a", "b", "c", "d", "e"):
            r = c.put(rec_path(store["id"], key), content=b"1")
            assert ok(r), r.text
            assert r.headers["x-ratelimit-limit"] == str(RECORDS)
        # keys and the ZIP download are store requests, not record operations
        for path in ("/keys", "/records"):
            r = c.get(f"/v2/key-value-stores/{store['id']}{path}")
            assert r.headers["x-ratelimit-limit"] == str(STORE), (path, r.headers)
            assert_429(r, STORE)  # and the spent store budget refuses them


def test_every_response_carries_x_ratelimit_limit(limited: Server) -> None:
    user = USER_PER_MINUTE // 60
    with limited.client() as c, limited.anon() as anon, limited.client("okvs_" + secrets.token_urlsafe(30)) as bad:
        store = new_store(c)
        sid = store["id"]
        cases = [
            (c.get("/v2/key-value-stores"), 200, user),
            (c.post("/v2/key-value-stores", params={"name": "x" + secrets.token_hex(4)}), 201, user),
            (c.get(f"/v2/key-value-stores/{sid}"), 200, STORE),
            (c.get(rec_path(sid, "missing")), 404, RECORDS),
            (c.get(f"/v2/key-value-stores/{'A' * 17}"), 404, user),
            (c.get("/v2/nothing-here"), 404, user),
            (anon.get("/v2/key-value-stores"), 401, user),
            (bad.get("/v2/key-value-stores"), 401, user),
            (c.patch(f"/v2/key-value-stores/{sid}"), 405, user),
            (c.options(f"/v2/key-value-stores/{sid}"), 204, user),
            (c.get("/v2/key-value-stores", params={"limit": "x"}), 400, user),
        ]
    for r, status, limit in cases:
        assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
        assert r.headers.get("x-ratelimit-limit") == str(limit), (r.request.method, r.request.url, r.headers)
        assert "X-RateLimit-Limit" in r.headers.get("access-control-expose-headers", ""), r.headers


def test_apify_client_rides_out_429s_and_every_record_lands(limited: Server, limited_clock: FakeClock) -> None:
    from apify_client import ApifyClient

    with limited.client() as c:
        store = new_store(c)
    client = ApifyClient(limited.token, api_url=limited.url, max_retries=12,
                         min_delay_between_retries=timedelta(milliseconds=20))
    kvs = client.key_value_store(store["id"])
    n = 60
    log_before = limited.log().count('" 429')

    def write(i: int) -> None:
        kvs.set_record(f"rec-{i}", {"i": i})

    # Time passes with the requests, not with the wall clock: each reading of the clock (one a record request: the
    # caller's and the store's buckets are decided at one instant) moves it 60 ms, so a request brings back 0.6 of a
    # record token and a client left retrying alone gets through at its next try. (At 0.3 of a token, after the
    # limiter went from two readings to one, the last writer needed 3-4 more tries alone, each waiting twice as long
    # as the one before: a 40 s back-off, and a minute of the quick tier's wall.)
    limited_clock.tick = 0.06
    start = limited_clock.now
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(n)))
    spent = limited_clock.now - start
    limited_clock.tick = 0.0
    refused = limited.log().count('" 429') - log_before
    # 60 writes landed at 10/s from a bucket of 10: the limit held only if the clock had to move 5 s for them, i.e.
    # if the server refused (and the client retried) about 40 times.
    assert n <= RECORDS + RECORDS * spent + 1e-6, (spent, refused)
    assert refused >= 20, (refused, spent)
    limited_clock.advance(3600)  # the reads below find full buckets
    keys = kvs.list_keys(limit=1000)
    assert sorted(k.key for k in keys.items) == sorted(f"rec-{i}" for i in range(n))
    for i in (0, n // 2, n - 1):
        record = kvs.get_record(f"rec-{i}")
        assert record is not None and record["value"] == {"i": i}, record


# -- the per-user budget and anonymous callers ---------------------------------------------------------------------

USER_SMALL = 120  # 2 a second, burst 2; stores and records far above it


def _user_limited(servers: Callable[..., Server], tmp_path: Path, *flags: str, per_minute: int = USER_SMALL,
                  **kw: Any) -> Server:
    return servers(
        tmp_path, "sqlite", "--rate-limits", "on", "--rate-limit-user-per-minute", str(per_minute),
        "--rate-limit-store-per-second", "1000", "--rate-limit-records-per-second", "1000",
        "--default-general-access", "ANYONE_WITH_ID_CAN_READ", *flags, **kw,
    )


def test_per_user_limit_and_anonymous_per_ip_without_trusted_proxies(servers, tmp_path: Path) -> None:
    clock = FakeClock()
    s = _user_limited(servers, tmp_path, in_process=True, clock=clock)
    per_second = USER_SMALL // 60
    refused = 3 * per_second
    bob = s.new_user("bob")
    with s.client() as alice:
        rs = burst(lambda: alice.get("/v2/key-value-stores"), 4 * per_second)
        assert statuses(rs) == [200] * per_second + [429] * refused
        assert_429(rs[-1], per_second)
        # a store request over the user budget: 429, the header names the store's limit
        clock.advance(1.1)
        store = new_store(alice)  # one of the user's two
        rs = burst(lambda: alice.get(f"/v2/key-value-stores/{store['id']}"), 4 * per_second)
        assert statuses(rs) == [200] * (per_second - 1) + [429] * (refused + 1)
        assert_429(rs[-1], 1000)
    with s.client(bob) as b:  # another user has a budget of his own
        assert b.get("/v2/key-value-stores").status_code == 200
    clock.advance(1.1)
    spoof = iter(range(1, 1000))
    with s.anon() as anon:
        # anonymous callers are counted per IP; an X-Forwarded-For from an untrusted peer changes nothing
        rs = burst(lambda: anon.get(f"/v2/key-value-stores/{store['id']}",
                                    headers={"X-Forwarded-For": f"10.0.0.{next(spoof)}"}), 4 * per_second)
        assert statuses(rs) == [200] * per_second + [429] * refused, [r.text for r in rs]
        assert_429(rs[-1], 1000)
    with s.client() as alice:  # the IP's budget is not alice's
        assert alice.get(f"/v2/key-value-stores/{store['id']}").status_code == 200
    # requests that find nothing count too: probing for store IDs, guessing tokens
    for client, status, type_ in [(s.anon(), 404, "record-not-found"), (s.client(), 404, "record-not-found"),
                                  (s.client("okvs_" + secrets.token_urlsafe(30)), 401, "token-not-valid")]:
        clock.advance(1.1)
        with client:
            rs = burst(lambda client=client: client.get(f"/v2/key-value-stores/{secrets.token_hex(8)}x"), 4 * per_second)
        assert statuses(rs) == [status] * per_second + [429] * refused
        assert_error(rs[0], status, type_)
        assert_429(rs[-1], per_second)


def test_anonymous_per_forwarded_ip_behind_a_trusted_proxy(servers, tmp_path: Path) -> None:
    # A process of its own (the trusted proxies are the HTTP protocol's, read once per process), so the real clock:
    # one request a second, a bucket of one. A client's burst is refused unless its requests took a second each.
    s = _user_limited(servers, tmp_path, "--trusted-proxies", "127.0.0.1", per_minute=60)
    with s.client() as alice:
        store = new_store(alice)
    path = f"/v2/key-value-stores/{store['id']}"
    with s.anon() as anon:
        # each forwarded client has its own budget: many clients, each within it
        for i in range(1, 9):
            r = anon.get(path, headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert r.status_code == 200, (i, r.text)
        # one forwarded client over its budget; what it wrote left of the proxy's entry is not believed
        rs = burst(lambda: anon.get(path, headers={"X-Forwarded-For": f"{secrets.randbelow(250)}.9.9.9, 198.51.100.7"}),
                   8)
        assert ok(rs[0]) and rs[-1].status_code == 429, statuses(rs)
        assert_429(rs[-1], 1000)
        # another forwarded client is unaffected
        assert anon.get(path, headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 200


# -- several processes and nodes -----------------------------------------------------------------------------------

SHARED_RECORDS = 20


def second_node(first: Server, clock: FakeClock) -> Server:
    """Another server on the same PostgreSQL schema and Redis (another node of one deployment), in this process like
    the first, its buckets on the same hand-moved clock."""
    from tests.inprocess import InProcessServer

    port = free_port()
    args = list(first.args)
    args[args.index("--port") + 1] = str(port)
    node = InProcessServer(f"http://127.0.0.1:{port}", first.token, first.data_dir, dict(first.env), args)
    node.rate_limit_clock = clock  # type: ignore[attr-defined]
    node.start()
    return node


@pytest.mark.redis
@pytest.mark.postgres
def test_two_nodes_share_one_budget_and_fail_open_while_redis_is_down(tmp_path: Path) -> None:
    """Two apps, each with its own Redis connections, on one schema; the clock stands still, so a bucket spent
    stays spent: any 2xx after that was let through unchecked."""
    redis_server = RedisServer()
    redis_server.start()
    clock = FakeClock()
    # --redis-timeout: a busy machine's slow answer must not make a limiter fail open (and a count come out high)
    flags = ("--rate-limits", "on", "--redis-url", redis_server.url, "--redis-timeout", "30",
             "--rate-limit-records-per-second", str(SHARED_RECORDS), "--rate-limit-store-per-second", "1000",
             "--rate-limit-user-per-minute", str(1_000_000))
    a = make_server(tmp_path, "postgres", *flags, in_process=True, clock=clock)
    b = None
    try:
        b = second_node(a, clock)
        with a.client() as ca, b.client() as cb:
            store = new_store(ca)
            assert cb.get(f"/v2/key-value-stores/{store['id']}").status_code == 200  # same data behind both
            seq = itertools.count()

            def put(n: int) -> int:
                """A PUT through node A or B in turn; its status."""
                return (ca, cb)[n % 2].put(rec_path(store["id"], f"k{n % 50}"), content=b"v").status_code

            # one budget: 8 threads over both nodes get one bucket through, not one a node
            with ThreadPoolExecutor(8) as pool:
                counts = Counter(pool.map(put, range(3 * SHARED_RECORDS)))
            assert counts == {201: SHARED_RECORDS, 429: 2 * SHARED_RECORDS}, (counts, a.log()[-3000:])
            assert [put(n) for n in range(4)] == [429] * 4  # on both nodes

            # Redis dies in the middle of a burst: no request fails (only 201 or 429), and from then on the spent
            # bucket lets requests through: unchecked (fail open)
            def put_then_kill(n: int) -> int:
                status = put(n)
                if next(seq) == 10:
                    redis_server.stop()
                return status

            with ThreadPoolExecutor(4) as pool:
                counts = Counter(pool.map(put_then_kill, range(60)))
            assert set(counts) <= {201, 429} and counts[201] > 0, counts
            # while it is down, requests keep succeeding on both nodes
            assert [put(n) for n in range(20)] == [201] * 20
            log = a.log()  # both nodes' lines: the servers share this process's loggers
            assert log.count("Redis unavailable") == 2, log[-3000:]  # one warning per node per outage

            # Redis is back (empty): after the limiters' retry interval (a real second), one budget again. Until
            # both have asked Redis again, requests are let through; then the fresh bucket is spent and stays so.
            redis_server.start()
            deadline = time.monotonic() + 60
            tail: list[int] = []
            while tail[-4:] != [429] * 4 and time.monotonic() < deadline:
                tail.append(put(len(tail)))
                time.sleep(0.01)
            assert tail[-4:] == [429] * 4, f"limits did not apply again after Redis came back: {Counter(tail)}"
            assert tail.count(201) >= SHARED_RECORDS, Counter(tail)  # a fresh bucket, spent again
            assert [put(n) for n in range(2 * SHARED_RECORDS)] == [429] * (2 * SHARED_RECORDS)
            log = a.log()
            assert log.count("reachable again") == 2, log[-3000:]
            assert "Traceback" not in log
    finally:
        if b is not None:
            b.stop()
        a.stop()
        redis_server.stop()
        _release_schema(a.env["OPENKVS_DATABASE_SCHEMA"])


def test_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openkvs", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
         "--workers", "2", "--rate-limits", "on"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0, out.stdout
    assert "--redis-url" in out.stderr and "--rate-limits off" in out.stderr, out.stderr


WORKER_RECORDS = 5


@pytest.mark.slow  # three worker processes hammered for 3 s
def test_workers_with_redis_share_one_budget(servers, tmp_path: Path) -> None:
    """Worker processes run on the real clock (Redis TIME). What no load can break: a shared bucket lets through at
    most its size plus its refill over the run, timed from the first send to the last answer; three budgets would
    let through up to three times that, which the hammering (far more than 15 requests a second) would take."""
    redis_url = shared_redis_url()
    s = servers(tmp_path, "sqlite", "--workers", "3", "--rate-limits", "on", "--redis-url", redis_url, "--redis-timeout", "30",
                "--rate-limit-records-per-second", str(WORKER_RECORDS), "--rate-limit-user-per-minute", "1000000")
    # No keep-alive: every request is a new connection, so the kernel spreads them over the workers.
    clients = [s.client(limits=httpx.Limits(max_keepalive_connections=0)) for _ in range(3)]
    try:
        store = new_store(clients[0])
        counts, elapsed = hammer(clients, lambda c, n: c.put(rec_path(store["id"], f"k{n % 20}"), content=b"v"),
                                 3.0, threads_per_client=2)
        got = accepted(counts)
        assert counts[429] > 0, f"the hammering did not exceed the limit, so it proves nothing: {counts}"
        # refused at all means the bucket ran dry, so at least its size went through
        assert WORKER_RECORDS <= got <= WORKER_RECORDS * (1 + elapsed) + 1, (counts, elapsed)
    finally:
        for c in clients:
            c.close()


def test_rate_limits_off_never_429_and_still_send_the_header(servers, tmp_path: Path) -> None:
    s = servers(tmp_path, "sqlite", "--rate-limits", "off", "--workers", "2", "--rate-limit-records-per-second", "5",
                "--rate-limit-store-per-second", "3", "--rate-limit-user-per-minute", "120")
    with s.client() as c:
        store = new_store(c)
        with ThreadPoolExecutor(4) as pool:  # 40 writes: eight times the record limit, whatever time they take
            counts = Counter(pool.map(lambda n: c.put(rec_path(store["id"], f"k{n % 10}"), content=b"v").status_code,
                                      range(40)))
        assert counts == {201: 40}, counts
        for r, limit in [
            (c.get(rec_path(store["id"], "k1")), 5),
            (c.get(f"/v2/key-value-stores/{store['id']}"), 3),
            (c.get("/v2/key-value-stores"), 2),
            (c.get("/v2/nothing-here"), 2),
        ]:
            assert r.headers.get("x-ratelimit-limit") == str(limit), (r.request.url, r.headers)
        rs = burst(lambda: c.get("/v2/key-value-stores"), 20)
        assert all(r.status_code == 200 for r in rs)
