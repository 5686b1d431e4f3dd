"""A request's own fault found after an export's first byte (``flatten`` making a later row's keys too long) cuts
the transfer, as any failure after the first byte does (API-datasets.md 7: never a document that looks complete),
and the server logs one line that says why: it is not a server error (it logged "Exception in ASGI application"
with the trace of an exception group)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_datasets_attack import items_url, new_dataset
from tests.api.test_datasets_attack_export import _deep


def test_a_flatten_failure_after_the_first_byte_cuts_the_transfer_and_logs_one_line(tmp_path, start_server):
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120) as c:
        did = new_dataset(c)
        small = [{"a": {"x": i}} for i in range(100)]  # (more than the first piece's rows: the head goes first)
        assert c.post(items_url(did), json=[*small, _deep(90, 100_000)]).status_code == 201
        with pytest.raises(httpx.RemoteProtocolError):  # the chunked body never ends
            with c.stream("GET", items_url(did), params={"flatten": "a", "format": "json"}) as r:
                assert r.status_code == 200
                for _ in r.iter_bytes():
                    pass
    log = s.log()
    assert "aborted after its first byte" in log and "longer than" in log, log[-2000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
