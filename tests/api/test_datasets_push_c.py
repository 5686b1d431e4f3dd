"""Pushes that _cpush.c prepares (no fields schema) and ones it hands back to Python, over HTTP on every backend:
the items read back are each item's stored form (API-datasets.md 4.4) and the counters and columns follow
(tests/datasets/test_cpush.py compares the two paths in process, with many more bodies)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import unique

BODIES = {
    # what the C takes: every number form, escapes, astral text, empty containers, '#' keys
    "c": '[{"a":1E5,"b":1e-7,"c":-0,"d":0.1,"e":1.0,"f":10000000000000000000000,"g":-0.0,"h":11.850},'
    ' {"s":"\\u2028\\/\\u0000\\ud83d\\ude00 \u00e9\U0001f600","t":{},"u":[],"v":[[],{}]},'
    ' {"#debug":{"ms":1}}, {"a":2,"b":[1,2,3]}]',
    # what it hands back: a duplicate key (its first place, its last value)
    "python": '[{"a":1,"b":2,"a":3}, {"x":[1]}]',
}


def rule(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("name", list(BODIES))
def test_pushed_items_read_back_as_stored(shared_server, name: str) -> None:
    body = BODIES[name].encode()
    expected = [rule(x) for x in json.loads(body)]
    with shared_server.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("cpush")}).json()["data"]["id"]
        r = c.post(f"/v2/datasets/{did}/items", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        jsonl = c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl"})
        assert jsonl.content.split(b"\n")[:-1] == expected
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == len(expected)
        # the columns of a csv export come from the paths kept at push time
        csv = c.get(f"/v2/datasets/{did}/items", params={"format": "csv", "skipHidden": "1"})
        assert csv.status_code == 200
        header = csv.content.split(b"\r\n")[0].decode().lstrip("\ufeff").split(",")
        assert "#debug/ms" not in header and ("a" in header or "x" in header)


def test_a_lone_surrogate_is_the_same_400(shared_server) -> None:
    with shared_server.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("cpush")}).json()["data"]["id"]
        r = c.post(f"/v2/datasets/{did}/items", content=b'[{"a":"\\ud800"}]',
                   headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["message"].endswith("A string in the items holds a lone UTF-16 surrogate.")
