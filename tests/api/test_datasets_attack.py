"""Hostile input to the dataset endpoints (API-datasets.md sections 1, 2, 4, 8, 10) on both backends: what an
attacker can send to push, to the items query and to signatures, and races of a delete with an export and a push.
Each answer is a clear 4xx in the contract's shape or a correct result: never a 500, never a trace, never an
export that looks complete but is not. (What test_datasets.py already checks is not repeated.)"""

from __future__ import annotations

import csv as csvlib
import io
import threading
import time
import xml.dom.minidom

import httpx
import pytest
from python_calamine import CalamineWorkbook

from . import assert_error, new_store, unique


def new_dataset(c: httpx.Client) -> str:
    r = c.post("/v2/datasets", params={"name": unique("atk")})
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


def items_url(did: str) -> str:
    return f"/v2/datasets/{did}/items"


def push_raw(c: httpx.Client, did: str, body: bytes) -> httpx.Response:
    return c.post(items_url(did), content=body, headers={"content-type": "application/json"})


def test_numbers_and_keys_at_the_edges(shared_server):
    with shared_server.client() as c:
        did = new_dataset(c)
        # beyond a double, and beyond what Python turns into text (4,300 digits): a 400, nothing stored
        for body in (b'{"a": 1e400}', b'{"a": -1e400}', b'[{"a": 1}, {"b": ' + b"9" * 5000 + b"}]"):
            r = push_raw(c, did, body)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid-input", r.text
        # a lone surrogate in a key, NUL in a key and a value (stored as the \\u0000 escape, on PostgreSQL too)
        assert_error(push_raw(c, did, b'{"\\udc00": 1}'), 400, "invalid-input")
        body = b'{"a\\u0000b": "x\\u0000y", "n": -0, "f": -0.0, "u": 18446744073709551616, "": 1, "e": 1e-400}'
        assert push_raw(c, did, body).status_code == 201
        r = c.get(items_url(did))
        assert r.status_code == 200 and r.json() == [
            {"a\x00b": "x\x00y", "n": 0, "f": -0.0, "u": 2**64, "": 1, "e": 0.0}
        ]
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == 1
        # every format renders it: XML without the NUL XML 1.0 forbids, CSV with it quoted as any other character
        x = c.get(items_url(did), params={"format": "xml"})
        dom = xml.dom.minidom.parseString(x.content)
        assert dom.getElementsByTagName("a_b")[0].firstChild.data == "xy"
        assert dom.getElementsByTagName("u")[0].firstChild.data == "18446744073709551616"
        csv = c.get(items_url(did), params={"format": "csv", "bom": "0"})
        assert csv.status_code == 200 and csv.text.splitlines()[1].split(",")[:4] == ["x\x00y", "0", "-0.0", "18446744073709551616"]


@pytest.mark.slow  # 200,000 items and a 50,000-key item on each of four backends: a load test, tens of seconds each
def test_many_tiny_items_and_a_very_wide_item(shared_server):
    with shared_server.client() as c:
        did = new_dataset(c)
        r = push_raw(c, did, b"[" + b",".join([b"{}"] * 200_000) + b"]")
        assert r.status_code == 201, r.text
        wide = {f"k{i}": i for i in range(50_000)}
        assert c.post(items_url(did), json=wide).status_code == 201
        got = c.get(f"/v2/datasets/{did}").json()["data"]
        assert got["itemCount"] == 200_001 and got["cleanItemCount"] == 1  # an empty item is not clean
        r = c.get(items_url(did), params={"offset": 200_000, "format": "csv", "bom": "false"})
        header = r.text.split("\r\n")[0].split(",")
        assert r.status_code == 200 and header[:3] == ["k0", "k1", "k2"] and len(header) == 2000  # the column cap
        r = c.get(items_url(did), params={"offset": 199_999, "format": "json"})
        assert r.json()[0] == {} and len(r.json()[1]) == 50_000


def test_query_lists_of_thousands_of_names(shared_server):
    with shared_server.client() as c:
        did = new_dataset(c)
        c.post(items_url(did), json=[{"f1": 1, "f4999": "x", "g": 2}])
        names = ",".join(f"f{i}" for i in range(5000))
        for param, expected in (("fields", {"f1": 1, "f4999": "x"}), ("omit", {"g": 2}), ("unwind", None), ("flatten", None)):
            r = c.get(f"{items_url(did)}?{param}={names}")
            assert r.status_code == 200, (param, r.text[:300])
            assert r.json() == [expected or {"f1": 1, "f4999": "x", "g": 2}], param


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "9007199254740992"}, {"limit": "-1"}, {"offset": "1e3"}, {"limit": "\u0663"}, {"offset": "+1"},
        {"delimiter": "ab", "format": "csv"}, {"delimiter": "\r", "format": "csv"}, {"xmlRoot": "a><b", "format": "xml"},
        {"xmlRow": "x y", "format": "xml"}, {"xmlRoot": "\u00e9", "format": "xml"}, {"xmlRow": "1a", "format": "xml"},
        {"format": "yaml"}, {"desc": "yes"}, {"outputFields": "a"}, {"fields": "a", "outputFields": "a,b"},
        # booleans are 1/true/0/false exactly, as on every other endpoint (API.md section 1)
        {"desc": "TRUE"}, {"clean": "True"}, {"bom": "FALSE"}, {"skipHeaderRow": "tRue", "format": "csv"},
    ],
)
def test_bad_query_values_are_400(shared_server, params):
    with shared_server.client() as c:
        did = new_dataset(c)
        assert_error(c.get(items_url(did), params=params), 400, "invalid-input")


def test_values_that_break_text_formats(shared_server):
    hostile = {
        "q": 'a"b,c\r\nd;e\tf', "cdata": "]]><![CDATA[", "ctl": "\x01\x0b\x1f\x7f\ufffe", "h": "<script>alert(1)</script>",
        "@": {'x"y': "<\n\t>", "on": "1"}, "#": "text", "amp": "&amp;&#0;", "_x0041_": "_x0041_",
    }
    with shared_server.client() as c:
        did = new_dataset(c)
        c.post(items_url(did), json=[hostile, {"q": "=cmd|' /C calc'!A0"}])
        for fmt, extra in (("xml", {"xmlRoot": "r.x-y", "xmlRow": "_row"}), ("rss", {"feedTitle": "<b>&]]>\x01", "feedDescription": "\x00"})):
            r = c.get(items_url(did), params={"format": fmt, **extra})
            assert r.status_code == 200
            dom = xml.dom.minidom.parseString(r.content)  # well-formed whatever the values
            if fmt == "rss":
                assert dom.getElementsByTagName("title")[0].firstChild.data == "<b>&]]>"
            else:
                assert dom.documentElement.tagName == "r.x-y" and len(dom.getElementsByTagName("_row")) == 2
                row = dom.getElementsByTagName("_row")[0]
                assert row.getAttribute("x_y") == "<\n\t>" and row.getElementsByTagName("cdata")[0].firstChild.data == "]]><![CDATA["
        r = c.get(items_url(did), params={"format": "html"})
        assert "<script>" not in r.text and "&lt;script&gt;" in r.text and r.headers["content-security-policy"] == "sandbox"
        for delimiter in (";", "\t", "\u00e9", "\U0001f600", "a"):
            r = c.get(items_url(did), params={"format": "csv", "delimiter": delimiter, "bom": "false"})
            assert r.status_code == 200
            rows = list(csvlib.reader(io.StringIO(r.text, newline=""), delimiter=delimiter))
            header = rows[0]
            assert rows[1][header.index("q")] == hostile["q"], delimiter
            assert rows[1][header.index("amp")] == "&amp;&#0;", delimiter
        r = c.get(items_url(did), params={"format": "xlsx"})
        sheet = CalamineWorkbook.from_filelike(io.BytesIO(r.content)).get_sheet_by_index(0).to_python()
        header, first = sheet[0], sheet[1]
        assert first[header.index("_x0041_")] == "_x0041_"  # the escape pattern kept literal, header and cell
        assert first[header.index("q")] == hostile["q"] and first[header.index("ctl")] == "\x7f"  # C0 controls dropped


def test_signatures_open_only_their_own_dataset(shared_server):
    with shared_server.client() as c, shared_server.anon() as anon:
        a, b = new_dataset(c), new_dataset(c)
        c.post(items_url(a), json={"a": 1})
        c.post(items_url(b), json={"b": 1})
        sig_a = c.get(f"/v2/datasets/{a}").json()["data"]["itemsPublicUrl"].split("signature=")[1]
        assert anon.get(items_url(a), params={"signature": sig_a}).json() == [{"a": 1}]
        assert_error(anon.get(items_url(b), params={"signature": sig_a}), 403, "permission-denied")
        assert_error(anon.get(f"/v2/datasets/{a}/statistics", params={"signature": sig_a}), 403, "permission-denied")
        # a key-value store's signature opens none of a dataset, and a dataset's none of a store
        kvs = new_store(c)
        kvs_sig = c.get(f"/v2/key-value-stores/{kvs['id']}/keys").json()
        store_url = c.get(f"/v2/key-value-stores/{kvs['id']}").json()["data"].get("keysPublicUrl", "")
        for sig in [s.split("signature=")[1] for s in [store_url] if "signature=" in s]:
            assert_error(anon.get(items_url(a), params={"signature": sig}), 403, "permission-denied")
        assert kvs_sig is not None
        for sig in ("", "x", "x" * 10_000, "\u00e9", "\x00", "%%", "1.2.3", "AAAA" * 20):
            r = anon.get(items_url(a), params={"signature": sig})
            assert r.status_code in (401, 403), (sig[:20], r.status_code, r.text)
            assert "Traceback" not in r.text


def test_a_dataset_id_is_not_a_store_or_a_queue(shared_server):
    with shared_server.client() as c:
        did = new_dataset(c)
        for path in (
            f"/v2/key-value-stores/{did}", f"/v2/key-value-stores/{did}/keys", f"/v2/key-value-stores/{did}/records/k",
            f"/v2/request-queues/{did}", f"/v2/request-queues/{did}/head", f"/v2/request-queues/{did}/requests",
        ):
            assert_error(c.get(path), 404, "record-not-found")
        assert_error(c.put(f"/v2/key-value-stores/{did}/records/k", json={}), 404, "record-not-found")
        assert_error(c.post(f"/v2/request-queues/{did}/requests", json={"url": "https://a.b", "uniqueKey": "u"}), 404, "record-not-found")
        assert_error(c.delete(f"/v2/key-value-stores/{did}"), 404, "record-not-found")
        kid = new_store(c)["id"]
        assert_error(c.get(items_url(kid)), 404, "record-not-found")
        assert_error(c.post(items_url(kid), json={}), 404, "record-not-found")
        assert c.get(f"/v2/datasets/{did}").status_code == 200  # still there


def test_head_items_says_what_get_says_without_a_body(shared_server):
    with shared_server.client() as c:
        did = new_dataset(c)
        c.post(items_url(did), json=[{"a": i} for i in range(5)])
        for params in ({"format": "csv", "offset": 1, "limit": 2}, {"format": "xlsx", "desc": "1"}, {"view": "x"}):
            g, h = c.get(items_url(did), params=params), c.head(items_url(did), params=params)
            assert h.status_code == g.status_code and h.content == b""
            if g.status_code == 200:
                skip = ("date", "x-request-id")
                assert {k: v for k, v in h.headers.items() if k not in skip} == {k: v for k, v in g.headers.items() if k not in skip}


def test_delete_during_an_export_and_a_push(shared_server):
    """The export keeps its snapshot or breaks off; it never ends as a valid document with items missing."""
    with shared_server.client() as c:
        did = new_dataset(c)
        row = {"t": "x" * 500}
        for _ in range(10):
            assert c.post(items_url(did), json=[row] * 2000).status_code == 201
        with c.stream("GET", items_url(did), params={"format": "jsonl"}) as r:
            assert r.status_code == 200 and r.headers["x-apify-pagination-total"] == "20000"
            chunks = r.iter_bytes()
            got = [next(chunks)]
            assert c.delete(f"/v2/datasets/{did}").status_code == 204
            try:
                got.extend(chunks)
                complete = True
            except httpx.HTTPError:
                complete = False
        body = b"".join(got)
        if complete:
            assert body.count(b"\n") == 20000 and body.endswith(b"\n")
        assert_error(c.get(items_url(did)), 404, "record-not-found")
        # pushes racing a delete: each is a 201 (stored before the delete) or a 404, never a 500
        did = new_dataset(c)
        results: list[int] = []

        def push() -> None:
            with shared_server.client() as p:
                for _ in range(20):
                    results.append(p.post(items_url(did), json=[row] * 500).status_code)

        t = threading.Thread(target=push)
        t.start()
        while not results:
            time.sleep(0.001)
        assert c.delete(f"/v2/datasets/{did}").status_code == 204
        t.join()
        assert set(results) <= {201, 404}, results
        assert 404 in results


@pytest.mark.slow  # a memory-growth run: a million rows rendered (79 s at load 25)
def test_an_unwind_that_multiplies_streams_in_bounded_memory(tmp_path, start_server):
    """``unwind=a,b`` of one 10 kB item of two arrays of 1,000 elements is a million rows: they are rendered in
    pieces, so the server's memory stays flat (it grew by about 300 MB when a batch's rows were one list) and the
    export is whole. One backend: the rows come from one stored item, the unwinding and rendering that multiply it
    are the same code on every backend (a million rows is seconds of CPU per run)."""
    from tests.api.test_datasets_stream import Peak

    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    n = 1000
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120) as c:
        did = new_dataset(c)
        assert c.post(items_url(did), json={"a": list(range(n)), "b": list(range(n)), "c": "x"}).status_code == 201
        assert s.proc is not None
        with Peak(s.proc.pid) as peak:
            lines = 0
            with c.stream("GET", items_url(did), params={"unwind": "a,b", "format": "jsonl"}) as r:
                assert r.status_code == 200 and r.headers["x-apify-pagination-count"] == "1"
                tail = b""
                for chunk in r.iter_bytes():
                    lines += chunk.count(b"\n")
                    tail = (tail + chunk)[-100:]
        assert lines == n * n
        assert tail.endswith(b'{"a":999,"b":999,"c":"x"}\n')
        assert peak.growth < 64 * 1024 * 1024, peak.growth


def test_a_csv_of_one_column_keeps_its_empty_lines(shared_server):
    """One empty field is written ``""``: a blank line is no row to most readers (it would drop the empty rows, or
    the header of a column named "")."""
    with shared_server.client() as c:
        did = new_dataset(c)
        c.post(items_url(did), json=[{"a": 1}, {"z": 2}, {"a": 3}])
        r = c.get(items_url(did), params={"format": "csv", "fields": "a", "bom": "0"})
        assert r.text == 'a\r\n1\r\n""\r\n3\r\n'
        did = new_dataset(c)
        c.post(items_url(did), json=[{"": False}])
        r = c.get(items_url(did), params={"format": "csv", "bom": "0"})
        assert list(csvlib.reader(io.StringIO(r.text, newline=""))) == [[""], ["false"]]


def test_no_export_runs_an_items_script_in_a_browser(shared_server):
    """An item whose ``@`` member declares the XHTML namespace makes ``<item xmlns="http://www.w3.org/1999/xhtml">
    <script>...`` in the xml and rss exports, which a browser runs as script: on the API's origin, which is the web
    console's (its token in that origin's storage), for whoever opens a public dataset's or a signed items link.
    Every format is sent sandboxed, as html was (and records are), and never sniffed."""
    with shared_server.client() as c:
        did = new_dataset(c)
        item = {"@": {"xmlns": "http://www.w3.org/1999/xhtml"}, "script": "alert(document.domain)"}
        assert c.post(items_url(did), json=item).status_code == 201
        for fmt in ("json", "jsonl", "csv", "html", "xlsx", "xml", "rss"):
            r = c.get(items_url(did), params={"format": fmt})
            assert r.status_code == 200, r.text
            assert r.headers["content-security-policy"] == "sandbox", fmt
            assert r.headers["x-content-type-options"] == "nosniff", fmt
        assert c.head(items_url(did), params={"format": "xml"}).headers["content-security-policy"] == "sandbox"
