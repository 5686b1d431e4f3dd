"""Rate limits of datasets (API-datasets.md section 10): pushes spend from a budget of their own per dataset
(--rate-limit-push-per-second, 400 by default), every other dataset request from the store budget (60/s);
``X-RateLimit-Limit`` names the limit of the endpoint answered, and a refusal is 429 with ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.test_rate_limits import assert_429, ok
from tests.ratelimit.helpers import FakeClock

from . import unique

PUSH, STORE = 6, 2


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()  # the buckets' time: it stands still but when a test moves it, so counts are exact


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, start_server, clock: FakeClock) -> Iterator:
    yield start_server(
        tmp_path_factory.mktemp("dsrl"), "sqlite", "--rate-limits", "on",
        "--rate-limit-push-per-second", str(PUSH), "--rate-limit-store-per-second", str(STORE),
        "--rate-limit-user-per-minute", "6000", in_process=True, clock=clock,
    )


def test_pushes_have_their_own_budget(limited, clock: FakeClock) -> None:
    with limited.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("ds")}).json()["data"]["id"]
        clock.advance(1.1)  # the create spent from the store budget: let it refill
        rs = [c.post(f"/v2/datasets/{did}/items", json={"i": i}) for i in range(3 * PUSH)]
        allowed = sum(map(ok, rs))
        assert [r.status_code for r in rs] == [201] * PUSH + [429] * (2 * PUSH)
        assert all(r.headers["x-ratelimit-limit"] == str(PUSH) for r in rs)
        assert_429(next(r for r in rs if not ok(r)), PUSH)
        # the pushes left the store budget alone: a read still gets through, under the store's own limit
        r = c.get(f"/v2/datasets/{did}/items")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == str(STORE)
        assert len(r.json()) == allowed  # each refused push stored nothing
        reads = [c.get(f"/v2/datasets/{did}") for _ in range(3 * STORE)]
        assert [r.status_code for r in reads] == [200] * (STORE - 1) + [429] * (2 * STORE + 1)
        assert_429(reads[-1], STORE)
