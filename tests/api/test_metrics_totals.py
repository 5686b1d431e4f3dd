"""``GET /metrics`` tells what is stored: resources and bytes by kind, and records (issue 17), counted at most once a
minute however often it is read."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server

# A real process: the metrics registry, and the totals' one-minute memory, are per process.
pytestmark = pytest.mark.server_process


def _totals(server: Server, token: str) -> dict[tuple[str, str], float]:
    with server.client(token) as c:
        r = c.get("/metrics")
        assert r.status_code == 200, r.text
    found = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name in ("openkvs_resources", "openkvs_stored_bytes", "openkvs_records"):
                found[(s.name, s.labels.get("kind", ""))] = s.value
    return found


def test_metrics_count_what_is_stored_by_kind(server: Server) -> None:
    token = server.new_user("totals")
    with server.client(token) as c:
        stores = [c.post("/v2/key-value-stores", params={"name": f"s{i}"}).json()["data"]["id"] for i in range(2)]
        for i, key in enumerate(["a", "b", "c"]):
            assert c.put(f"/v2/key-value-stores/{stores[i % 2]}/records/{key}", content=b"x" * 10).status_code == 201
        assert c.post("/v2/datasets", params={"name": "d"}).status_code == 201
        for name in ("q1", "q2", "q3"):
            assert c.post("/v2/request-queues", params={"name": name}).status_code == 201
    totals = _totals(server, token)
    assert totals[("openkvs_resources", "kvs")] == 2
    assert totals[("openkvs_resources", "dataset")] == 1
    assert totals[("openkvs_resources", "queue")] == 3
    assert totals[("openkvs_records", "")] == 3
    assert ("openkvs_stored_bytes", "kvs") in totals

    # read again at once: the counts are kept, not taken again (a new store shows only after the minute)
    with server.client(token) as c:
        assert c.post("/v2/key-value-stores", params={"name": "later"}).status_code == 201
    assert _totals(server, token)[("openkvs_resources", "kvs")] == 2
