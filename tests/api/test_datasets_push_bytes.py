"""What an export gives back for a pushed item, over HTTP on every backend (API-datasets.md 4.4, 6.3-6.4): the
json and jsonl exports copy the stored bytes, which are ``json.dumps(item, ensure_ascii=False, separators=(",",
":"))`` as UTF-8 of the item as ``json.loads`` reads the body, however the client wrote it (tests/datasets/
test_itemjson.py checks the same in process, with many more bodies)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.datasets.test_itemjson import item

from . import unique


def rule(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=examples(15), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(item, min_size=1, max_size=40), st.booleans(), st.booleans())
def test_exports_give_back_the_stored_form_of_each_item(shared_server, items, ascii_, spaced) -> None:
    body = json.dumps(items, ensure_ascii=ascii_, separators=(", ", ": ") if spaced else (",", ":")).encode()
    expected = [rule(x) for x in json.loads(body)]
    with shared_server.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("bytes")}).json()["data"]["id"]
        r = c.post(f"/v2/datasets/{did}/items", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        jsonl = c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl"})
        assert jsonl.status_code == 200
        assert jsonl.content.split(b"\n")[:-1] == expected
        whole = c.get(f"/v2/datasets/{did}/items", params={"format": "json"})
        # (the separator aside: a compact item holds no raw newline)
        assert whole.content.replace(b",\n", b",") == b"[" + b",".join(expected) + b"]"
