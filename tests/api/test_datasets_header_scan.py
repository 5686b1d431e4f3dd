"""The header scan of a tabular export with ``unwind`` (api/items.py ``table_columns``): with unwind the columns
come from the rows themselves, so they are scanned before the first byte, and one small item can unwind into
millions of rows. The scan is bounded (``MAX_HEADER_SCAN_CELLS``: past it a 400 that says what to do), and a client
that goes away during it frees its download slot at once (the scan stops), over a real socket.

The scan is the HTTP layer's (the same for both backends): SQLite only."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from openkvs.api import items as items_module

from . import unique


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def dataset(c: httpx.Client, items: list[dict]) -> str:
    did = c.post("/v2/datasets", params={"name": unique("scan")}).json()["data"]["id"]
    assert c.post(f"/v2/datasets/{did}/items", json=items).status_code == 201
    return did


def test_a_scan_past_the_cap_is_refused_before_the_first_byte(tmp_path, start_server, monkeypatch):
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--max-downloads-per-user", "1", in_process=True)
    monkeypatch.setattr(items_module, "MAX_HEADER_SCAN_CELLS", 5_000)
    monkeypatch.setattr(items_module, "SCAN_PIECE_CELLS", 100)
    with s.client() as c:
        # each item unwinds into 40 rows of 3 cells (a, b, id): 120 cells; 50 items are 6,000 cells
        did = dataset(c, [{"id": i, "a": list(range(20)), "b": [1, 2]} for i in range(50)])
        r = c.get(f"/v2/datasets/{did}/items", params={"format": "csv", "unwind": "a,b"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid-input"
        assert "5,000 cells" in r.json()["error"]["message"] and "'limit'" in r.json()["error"]["message"]
        for fmt in ("html", "xlsx"):
            assert c.get(f"/v2/datasets/{did}/items", params={"format": fmt, "unwind": "a,b"}).status_code == 400
        # fewer items: under the cap, the whole export (and the slot of the refused ones was given back)
        r = c.get(f"/v2/datasets/{did}/items", params={"format": "csv", "unwind": "a,b", "limit": "40"})
        assert r.status_code == 200
        lines = r.content.decode("utf-8-sig").splitlines()
        assert lines[0] == "id,a,b" and len(lines) == 1 + 40 * 40 and lines[-1] == "39,19,2"
        # without unwind the header comes from the index: no scan, no cap
        assert c.get(f"/v2/datasets/{did}/items", params={"format": "csv"}).status_code == 200
        # json and jsonl have no header: unwind is free of the cap
        r = c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl", "unwind": "a,b"})
        assert r.status_code == 200 and len(r.content.splitlines()) == 50 * 40


def test_a_client_that_leaves_during_the_scan_frees_its_slot(tmp_path, start_server):
    # one export at a time for this user: a second one gets 429 while the first holds the slot
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--max-downloads-per-user", "1")
    with s.client() as c:
        # a, b of 1,000 elements each: a million rows an item; the scan of 20 items takes far longer than this test
        # (it stops at MAX_HEADER_SCAN_CELLS, tens of seconds of CPU, if nothing else stops it)
        did = dataset(c, [{"id": i, "a": list(range(1000)), "b": list(range(1000))} for i in range(20)])
        small = {"format": "json", "limit": "1"}
        assert c.get(f"/v2/datasets/{did}/items", params=small).status_code == 200

        host, port = s.url.removeprefix("http://").split(":")
        for _ in range(50):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(
                f"GET /v2/datasets/{did}/items?format=csv&unwind=a,b HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {s.token}\r\n\r\n".encode()
            )
            sock.settimeout(0.3)
            try:
                answer = sock.recv(100)
            except TimeoutError:
                break  # no answer: it is scanning
            # the slot of the last probe was not given back yet when it arrived (429): again
            assert answer.startswith(b"HTTP/1.1 429"), answer
            sock.close()
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while c.get(f"/v2/datasets/{did}/items", params=small).status_code != 429:  # the scan holds the slot
            assert time.monotonic() < deadline, "the export with unwind never took its download slot"
            time.sleep(0.05)
        time.sleep(1.0)  # well into the scan
        sock.settimeout(0.01)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing sent yet: the header is still being scanned
        sock.close()

        deadline = time.monotonic() + 10
        while (r := c.get(f"/v2/datasets/{did}/items", params=small)).status_code == 429:
            assert time.monotonic() < deadline, "the slot stayed taken after the client went away"
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()[0]["id"] == 0
    # and the scan itself stopped: the server is idle
    time.sleep(0.5)
    before = cpu_seconds(s.proc.pid)
    time.sleep(1.0)
    assert cpu_seconds(s.proc.pid) - before < 0.25
