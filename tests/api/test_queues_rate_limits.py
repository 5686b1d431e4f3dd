"""Request queues' rate limits (API-request-queues.md section 10), through real servers on both backends: each
operation spends from its own per-queue budget (single-request operations 400/s, batches and head/lock 40/s, the
rest the store's 60/s), names it in X-RateLimit-Limit, and a spent budget refuses with 429 without touching the
others."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from openkvs.requestid import request_id
from tests.ratelimit.helpers import FakeClock

from . import assert_error

Q = "/v2/request-queues"
MESSAGE = "You have exceeded the rate limit. Please try again later."
URL = "https://example.com/"


def calls(qid: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(budget, method, path, httpx keywords) of every request-queue operation that names a queue."""
    rid = request_id(URL)
    one = {"url": URL, "uniqueKey": URL}
    return [
        ("requests", "POST", f"{Q}/{qid}/requests", {"json": one}),
        ("requests", "GET", f"{Q}/{qid}/requests/{rid}", {}),
        ("requests", "PUT", f"{Q}/{qid}/requests/{rid}", {"json": one}),
        ("requests", "PUT", f"{Q}/{qid}/requests/{rid}/lock", {"params": {"lockSecs": "60", "clientKey": "a"}}),
        ("requests", "DELETE", f"{Q}/{qid}/requests/{rid}/lock", {"params": {"clientKey": "a"}}),
        ("batch", "POST", f"{Q}/{qid}/requests/batch", {"json": [one]}),
        ("batch", "POST", f"{Q}/{qid}/head/lock", {"params": {"lockSecs": "60", "clientKey": "a"}}),
        ("batch", "DELETE", f"{Q}/{qid}/requests/batch", {"json": [{"uniqueKey": "gone"}]}),
        ("store", "GET", f"{Q}/{qid}", {}),
        ("store", "PUT", f"{Q}/{qid}", {"json": {"title": "t"}}),
        ("store", "GET", f"{Q}/{qid}/requests", {}),
        ("store", "GET", f"{Q}/{qid}/head", {}),
        ("store", "POST", f"{Q}/{qid}/requests/unlock", {"params": {"clientKey": "a"}}),
        ("requests", "DELETE", f"{Q}/{qid}/requests/{request_id('never')}", {}),
    ]


def test_each_operation_names_the_contracts_budget(
    start_server: Callable[..., Any], tmp_path: Path, backend: str
) -> None:
    s = start_server(tmp_path, backend, in_process=True)  # the defaults: rate limits on
    expected = {"requests": "400", "batch": "40", "store": "60"}
    with s.client() as c:
        qid = c.post(Q, params={"name": "rl-defaults"}).json()["data"]["id"]
        for budget, method, path, kw in calls(qid):
            r = c.request(method, path, **kw)
            assert r.status_code < 300, (method, path, r.text)
            assert r.headers["x-ratelimit-limit"] == expected[budget], (method, path, r.headers)


def test_a_spent_budget_leaves_the_others(start_server: Callable[..., Any], tmp_path: Path, backend: str) -> None:
    rates = {"batch": 2, "requests": 5, "store": 3}
    clock = FakeClock()  # the buckets' time stands still but when the test moves it: counts are exact
    s = start_server(
        tmp_path, backend, "--rate-limit-queue-batch-per-second", str(rates["batch"]),
        "--rate-limit-queue-requests-per-second", str(rates["requests"]),
        "--rate-limit-store-per-second", str(rates["store"]), in_process=True, clock=clock,
    )
    with s.client() as c:
        qid = c.post(Q, params={"name": "rl-spent"}).json()["data"]["id"]
        by_budget: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for budget, method, path, kw in calls(qid):
            by_budget.setdefault(budget, []).append((method, path, kw))
        for spent, ops in by_budget.items():
            clock.advance(1.2)  # every bucket full again (each holds one second's worth)
            n = rates[spent] * 4
            answers = [c.request(*ops[i % len(ops)][:2], **ops[i % len(ops)][2]) for i in range(n)]
            passed = sum(r.status_code < 300 for r in answers)
            refused = [r for r in answers if r.status_code == 429]
            assert passed + len(refused) == n, [r.text for r in answers if r.status_code not in (200, 201, 204, 429)]
            # a full bucket of `rate` and not one request more: nothing refills while the clock stands still
            assert [r.status_code < 300 for r in answers] == [True] * rates[spent] + [False] * (n - rates[spent])
            assert_error(refused[0], 429, "rate-limit-exceeded", MESSAGE)
            assert refused[0].headers["x-ratelimit-limit"] == str(rates[spent])
            assert int(refused[0].headers["retry-after"]) >= 1
            for other, other_ops in by_budget.items():  # the other budgets still answer at once
                if other != spent:
                    method, path, kw = other_ops[0]
                    r = c.request(method, path, **kw)
                    assert r.status_code < 300, (spent, other, r.text)
                    assert r.headers["x-ratelimit-limit"] == str(rates[other])


def test_official_client_rides_out_head_lock_limits(
    start_server: Callable[..., Any], tmp_path: Path, backend: str
) -> None:
    """A crawler's head/lock calls over the batch budget get 429s, which apify-client retries until they land."""
    from apify_client import ApifyClient

    # Time passes with the requests, not with the wall clock: each reading of the clock (one a request) moves it
    # 0.2 s, so a batch budget of 2 a second refuses calls once its burst is spent and a retry or two later lets each
    # through. (At 0.1 s each call needed about five tries, the last after a back-off of 0.3-0.6 s: 4 s a backend.)
    clock = FakeClock(tick=0.2)
    s = start_server(tmp_path, backend, "--rate-limit-queue-batch-per-second", "2", in_process=True, clock=clock)
    client = ApifyClient(s.token, api_url=s.url, api_public_url=s.url, max_retries=8,
                         min_delay_between_retries=timedelta(milliseconds=20))
    rq = client.request_queue(client.request_queues().get_or_create(name="rl-client").id, client_key="crawler")
    urls = [f"https://example.com/{i}" for i in range(10)]
    rq.batch_add_requests([{"url": u, "uniqueKey": u} for u in urls])
    locked = [item.url for _ in range(10) for item in rq.list_and_lock_head(lock_duration=timedelta(seconds=60),
                                                                              limit=1).items]
    assert sorted(locked) == sorted(urls)
    assert rq.get().pending_request_count == 10
    assert s.log().count('" 429') >= 5, s.log()  # the budget held: the client had to retry
