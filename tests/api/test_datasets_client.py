"""The official apify-client (sync and async) dataset methods against openkvs, over a real socket, on both
backends: what users run (API-datasets.md)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import timedelta

import httpx
import pytest
from apify_client import ApifyClient, ApifyClientAsync

from tests.conftest import TLS

from . import unique


def _get(obj, name):
    if isinstance(obj, dict):
        camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
        return obj.get(name, obj.get(camel))
    return getattr(obj, name)


@pytest.fixture(scope="module")
def client(shared_server) -> ApifyClient:
    return ApifyClient(shared_server.token, api_url=shared_server.url, api_public_url=shared_server.url, max_retries=1)


def test_dataset_lifecycle(shared_server, client):
    name = unique("ds")
    datasets = client.datasets()
    created = datasets.get_or_create(name=name)
    did = _get(created, "id")
    assert _get(created, "name") == name
    assert _get(created, "item_count") == 0
    assert _get(datasets.get_or_create(name=name), "id") == did
    got = client.dataset(did).get()
    assert got is not None and _get(got, "id") == did
    assert client.dataset("AAAAAAAAAAAAAAAAA").get() is None
    listed = datasets.list(limit=1000)
    assert did in [_get(d, "id") for d in _get(listed, "items")]
    unnamed = datasets.get_or_create()
    assert _get(unnamed, "name") is None
    assert _get(unnamed, "id") in [_get(d, "id") for d in _get(datasets.list(unnamed=True), "items")]
    assert did in [_get(d, "id") for d in datasets.iterate()]  # sends limit=0 first
    new_name = unique("ds2")
    updated = client.dataset(did).update(name=new_name, general_access="RESTRICTED")
    assert _get(updated, "name") == new_name
    assert _get(client.dataset(f"alice~{new_name}").get(), "id") == did
    client.dataset(did).delete()
    assert client.dataset(did).get() is None
    client.dataset(did).delete()  # a missing dataset: the client swallows the 404


def test_push_and_list_items(shared_server, client):
    did = _get(client.datasets().get_or_create(name=unique("ds")), "id")
    ds = client.dataset(did)
    ds.push_items({"n": 0, "#hidden": "h"})
    ds.push_items([{"n": i, "text": "ü" * (i % 3)} for i in range(1, 2500)])  # big: the client gzips it
    ds.push_items(json.dumps([{"n": 2500}, {"#only": "hidden"}, {}]))
    info = ds.get()
    assert _get(info, "item_count") == 2503
    assert _get(info, "clean_item_count") == 2501  # {"#only": ...} and {} have no visible key
    assert _get(info, "fields") == ["n", "#hidden", "text", "#only"]

    page = ds.list_items(offset=10, limit=5)
    assert [it["n"] for it in page.items] == [10, 11, 12, 13, 14]
    assert (page.offset, page.limit, page.count, page.total, page.desc) == (10, 5, 5, 2503, False)
    page = ds.list_items(limit=3, desc=True)
    assert page.items == [{}, {"#only": "hidden"}, {"n": 2500}] and page.desc is True
    page = ds.list_items(fields=["n"], limit=2)
    assert page.items == [{"n": 0}, {"n": 1}]
    page = ds.list_items(omit=["n"], limit=2, clean=True)
    assert page.items == [{"text": "ü"}]  # item 0 is {} after omit and skipHidden: dropped by skipEmpty
    assert page.count == 2  # Count is of stored items, before filters

    everything = list(ds.iterate_items())
    assert len(everything) == 2503 and everything[0] == {"n": 0, "#hidden": "h"}
    assert [it["n"] for it in everything[1:2501]] == list(range(1, 2501))
    assert [it["n"] for it in ds.iterate_items(offset=2490, limit=5)] == [2490, 2491, 2492, 2493, 2494]


def test_download_items_in_every_format(shared_server, client):
    did = _get(client.datasets().get_or_create(name=unique("ds")), "id")
    ds = client.dataset(did)
    ds.push_items([{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}])
    raw = ds.get_items_as_bytes(item_format="json")
    assert json.loads(raw) == [{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}]
    raw = ds.get_items_as_bytes(item_format="jsonl")
    assert [json.loads(line) for line in raw.decode().splitlines()] == [{"a": 1, "b": "x,y"}, {"b": 'q"r', "c": [True]}]
    raw = ds.get_items_as_bytes(item_format="csv")
    assert raw == b'\xef\xbb\xbfa,b,c/0\r\n1,"x,y",\r\n,"q""r",true\r\n'  # contract 6.5's own example
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig")))) == [["a", "b", "c/0"], ["1", "x,y", ""], ["", 'q"r', "true"]]
    raw = ds.get_items_as_bytes(item_format="xml")
    root = ET.fromstring(raw)
    assert root.tag == "items" and [el.findtext("b") for el in root] == ["x,y", 'q"r']
    raw = ds.get_items_as_bytes(item_format="rss")
    channel = ET.fromstring(raw).find("channel")
    assert channel is not None and len(channel.findall("item")) == 2
    raw = ds.get_items_as_bytes(item_format="html")
    assert raw.count(b"<tr>") == 3 and b"<th>c/0</th>" in raw
    raw = ds.get_items_as_bytes(item_format="xlsx")
    assert raw[:2] == b"PK"
    openpyxl = pytest.importorskip("openpyxl")
    sheet = openpyxl.load_workbook(io.BytesIO(raw), read_only=True).worksheets[0]
    rows = [list(r) + [None] * (3 - len(r)) for r in sheet.iter_rows(values_only=True)]  # (read-only: no trailing blanks)
    assert rows == [["a", "b", "c/0"], [1, "x,y", None], [None, 'q"r', True]]


def test_public_url_with_signature(shared_server, client):
    did = _get(client.datasets().get_or_create(name=unique("ds")), "id")
    ds = client.dataset(did)
    ds.update(general_access="RESTRICTED")
    ds.push_items([{"secret": 1}])
    anon = httpx.get(f"{shared_server.url}/v2/datasets/{did}/items", timeout=30, verify=TLS)
    assert anon.status_code in (401, 403)
    url = ds.create_items_public_url()
    r = httpx.get(url, timeout=30, verify=TLS)
    assert r.status_code == 200, r.text
    assert r.json() == [{"secret": 1}]
    url = ds.create_items_public_url(expires_in=timedelta(minutes=10), limit=1)
    assert httpx.get(url, timeout=30, verify=TLS).json() == [{"secret": 1}]
    public = _get(ds.get(), "items_public_url")
    assert httpx.get(str(public), timeout=30, verify=TLS).json() == [{"secret": 1}]
    forged = url.replace("signature=", "signature=x")
    assert httpx.get(forged, timeout=30, verify=TLS).status_code == 403


def test_statistics_without_schema(shared_server, client):
    did = _get(client.datasets().get_or_create(name=unique("ds")), "id")
    ds = client.dataset(did)
    ds.push_items([{"a": 1}])
    stats = ds.get_statistics()
    assert stats is not None
    assert _get(stats, "field_statistics") is None


def test_async_client(shared_server):
    async def go():
        client = ApifyClientAsync(shared_server.token, api_url=shared_server.url, max_retries=1)
        did = _get(await client.datasets().get_or_create(name=unique("ds")), "id")
        ds = client.dataset(did)
        await asyncio.gather(*(ds.push_items([{"w": w, "k": k} for k in range(100)]) for w in range(8)))
        items = [it async for it in ds.iterate_items()]
        assert len(items) == 800
        for w in range(8):  # each push is one contiguous run, in order
            mine = [i for i, it in enumerate(items) if it["w"] == w]
            assert mine == list(range(mine[0], mine[0] + 100))
            assert [items[i]["k"] for i in mine] == list(range(100))
        page = await ds.list_items(offset=795)
        assert page.count == 5 and page.total == 800
        raw = await ds.get_items_as_bytes(item_format="jsonl", limit=2)
        assert len(raw.splitlines()) == 2
        await ds.delete()
        assert await ds.get() is None

    asyncio.run(go())
