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
        dataset = c.post("/v2/datasets", params={"name": "d"}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{dataset}/items", json=[{"a": 1}, {"b": "x" * 100}]).status_code == 201
        queues = [c.post("/v2/request-queues", params={"name": n}).json()["data"]["id"] for n in ("q1", "q2", "q3")]
        request = {"url": "https://example.com/a", "uniqueKey": "a", "userData": {"note": "y" * 100}}
        assert c.post(f"/v2/request-queues/{queues[0]}/requests", json=request).status_code == 201
        # what the API says each holds: the metric's bytes by kind are their sums
        said = {
            "kvs": sum(c.get(f"/v2/key-value-stores/{s}").json()["data"]["stats"]["storageBytes"] for s in stores),
            "dataset": c.get(f"/v2/datasets/{dataset}").json()["data"]["stats"]["storageBytes"],
            "queue": sum(c.get(f"/v2/request-queues/{q}").json()["data"]["stats"]["storageBytes"] for q in queues),
        }
    totals = _totals(server, token)
    assert totals[("openkvs_resources", "kvs")] == 2
    assert totals[("openkvs_resources", "dataset")] == 1
    assert totals[("openkvs_resources", "queue")] == 3
    assert totals[("openkvs_records", "")] == 3
    assert said["dataset"] > 100 and said["queue"] > 100 and said["kvs"] >= 30
    for kind, stored in said.items():
        assert totals[("openkvs_stored_bytes", kind)] == stored, kind

    # read again at once: the counts are kept, not taken again (a new store shows only after the minute)
    with server.client(token) as c:
        assert c.post("/v2/key-value-stores", params={"name": "later"}).status_code == 201
    assert _totals(server, token)[("openkvs_resources", "kvs")] == 2
