"""The statistics of a dataset whose ``fields`` schema names 100,000 properties (nothing but the body's size bounds
a schema): the endpoint's work is as large as the schema, and other clients must be answered while it runs. Any
reader may call it (``generalAccess``), as often as it likes. Attack run, BENCHMARKS.md Issue 13."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow  # creating the dataset checks the schema: 6-20 s

PROPERTIES = 100_000


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory: pytest.TempPathFactory, start_server: Any) -> Server:
    """A server in its own process: in this one, the test's threads would share its interpreter lock."""
    return start_server(tmp_path_factory.mktemp("serve"), "sqlite", "--rate-limits", "off")


def client(server: Server, timeout: float = 300) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=timeout)


def test_other_clients_are_answered_while_wide_statistics_are_built(serve_process: Server) -> None:
    with client(serve_process) as c:
        props = {f"p{i}": {"type": "number"} for i in range(PROPERTIES)}
        schema = {"actorSpecification": 1, "fields": {"type": "object", "properties": props}}
        r = c.post("/v2/datasets", params={"name": "wide"}, json={"schema": schema})
        assert r.status_code == 201, r.text
        did = r.json()["data"]["id"]
        assert c.post(f"/v2/datasets/{did}/items", json=[{"p1": 1}, {"p1": 5, "p2": 7}]).status_code == 201

    result: dict[str, Any] = {}

    def statistics() -> None:
        with client(serve_process) as s:
            result["response"] = s.get(f"/v2/datasets/{did}/statistics")

    worker = threading.Thread(target=statistics)
    worker.start()
    answered = 0  # tiny GETs sent and answered while the statistics were still being built
    with client(serve_process) as reader:
        while worker.is_alive():
            r = reader.get("/v2/datasets", params={"limit": 1})
            assert r.status_code == 200
            answered += worker.is_alive()
            time.sleep(0.02)
    worker.join()
    stats = result["response"].json()["data"]["fieldStatistics"]
    assert len(stats) == PROPERTIES
    assert stats["p1"] == {"min": 1, "max": 5, "nullCount": 0, "emptyCount": 0}
    assert stats["p2"] == {"min": 7, "max": 7, "nullCount": 0, "emptyCount": 1}
    # Several, one after another (not a bound on their latency: that measures the machine). With the statistics
    # built and encoded on the event loop, at most the one sent before the work began was answered.
    assert answered >= 3, answered
