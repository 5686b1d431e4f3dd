"""Exports an attacker can make expensive (API-datasets.md section 7, flat memory; the hardening bar: CPU-heavy work
in pieces off the event loop): rows unwound from one large item, and tabular headers from a path index whose blocks
all differ."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_datasets_attack import items_url, new_dataset


def test_rows_unwound_from_a_large_item_are_rendered_in_bounded_pieces(tmp_path, start_server):
    """Every row unwound from an item carries the item's other fields: ``unwind=a`` of one item holding a 200 kB
    string and 500 elements is 500 rows of 200 kB. They were rendered 4,000 rows to a piece, 100 MB in one
    string (an item of 9 MB and 4,000 elements: 36 GB, the server killed by one GET); pieces now stop at a few
    MB of their items' size, so the server's memory stays flat and the export is whole."""
    from tests.api.test_datasets_stream import Peak

    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    n, text = 500, "x" * 200_000
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120) as c:
        did = new_dataset(c)
        assert c.post(items_url(did), json={"s": text, "a": list(range(n))}).status_code == 201
        assert s.proc is not None
        with Peak(s.proc.pid) as peak:
            lines = size = 0
            with c.stream("GET", items_url(did), params={"unwind": "a", "format": "jsonl"}) as r:
                assert r.status_code == 200
                tail = b""
                for chunk in r.iter_bytes():
                    lines += chunk.count(b"\n")
                    size += len(chunk)
                    tail = (tail + chunk)[-100:]
        assert lines == n and size > n * len(text)
        assert tail.endswith(b'x","a":499}\n')
        assert peak.growth < 64 * 1024 * 1024, peak.growth


def test_a_header_from_blocks_that_all_differ_reads_them_a_window_at_a_time(tmp_path, start_server):
    """A tabular header comes from the path index of each block of 1,000 items; storage answers each distinct list
    once. 64 blocks whose one wide item lists the same 19,000 keys in 64 orders are 64 distinct lists: they were
    all read and parsed at once (150 MB for this header) and merged on the event loop; now a window of blocks at
    a time, merged in a worker thread, so the memory stays flat, and the header is what it was."""
    from tests.api.test_datasets_stream import Peak

    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    keys = [f"k{i:05d}" for i in range(19_000)]
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120) as c:
        did = new_dataset(c)
        for part in range(2):
            blocks = []
            for b in range(part * 32, part * 32 + 32):
                wide = "{" + ",".join(f'"{k}":0' for k in keys[b:] + keys[:b]) + "}"
                blocks.append(",".join([wide] + ["{}"] * 999))
            body = ("[" + ",".join(blocks) + "]").encode()
            r = c.post(items_url(did), content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 201, r.text
        assert s.proc is not None
        with Peak(s.proc.pid) as peak:
            with c.stream("GET", items_url(did), params={"format": "csv", "bom": "0"}) as r:
                assert r.status_code == 200 and r.headers["x-apify-pagination-total"] == "64000"
                head = b""
                for chunk in r.iter_bytes():
                    head += chunk
                    if b"\r\n" in head:
                        break
        assert head.split(b"\r\n")[0].decode().split(",") == keys[:2000]  # at most 2000 columns, first seen first
        assert peak.growth < 64 * 1024 * 1024, peak.growth


def test_a_header_read_over_windows_of_growing_size_keeps_the_order_of_first_appearance(shared_server):
    """30 whole blocks, each with one key of its own: read in windows of 8, 16 and the rest, the header still names
    the keys in the order of the blocks, as a scan would (section 6.2), also from an offset inside a block."""
    with shared_server.client() as c:
        did = new_dataset(c)
        blocks = [",".join([f'{{"c":1,"k{b}":1}}'] + ['{"c":1}'] * 999) for b in range(30)]
        r = c.post(items_url(did), content=("[" + ",".join(blocks) + "]").encode(),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        r = c.get(items_url(did), params={"format": "csv", "bom": "0"})
        assert r.text.split("\r\n")[0] == ",".join(["c"] + [f"k{b}" for b in range(30)])
        r = c.get(items_url(did), params={"format": "csv", "bom": "0", "offset": "500"})
        assert r.text.split("\r\n")[0] == ",".join(["c"] + [f"k{b}" for b in range(1, 30)])


def _deep(levels: int, leaves: int) -> dict:
    inner: dict = {f"k{i}": i for i in range(leaves)}
    for _ in range(levels):
        inner = {"a": inner}
    return inner


def test_flatten_of_a_deep_wide_item_is_a_400_before_the_first_byte(shared_server):
    """``flatten`` repeats each leaf's whole path in its key: one item of 1.3 MB nested 90 levels over 100,000 leaves
    is a row of 18 MB of keys (5 MB nested 120 levels: 120 MiB, +369 MiB of server memory in the attack run).
    Past MAX_FLATTENED_KEYS a row is a 400 that says why when it is the export's first (the first rows are rendered
    before the answer starts; how many rows that first piece holds depends on the backend's reads, so a later one
    may come after the first byte: then the transfer is cut, as any failure after it); a dataset of items within
    it is exported whole."""
    from openkvs.datasets.pipeline import MAX_FLATTENED_KEYS

    with shared_server.client() as c:
        did = new_dataset(c)
        small = {"a": {"b": {"c": 1}}, "x": 2}
        assert c.post(items_url(did), json=[_deep(90, 100_000), small]).status_code == 201
        r = c.get(items_url(did), params={"flatten": "a", "format": "jsonl"})
        assert r.status_code == 400, r.text[:200]
        assert r.json()["error"]["type"] == "invalid-input"
        assert f"longer than {MAX_FLATTENED_KEYS:,} characters" in r.json()["error"]["message"]
        r = c.get(items_url(did), params={"flatten": "a", "format": "json", "offset": 1})
        assert r.status_code == 200 and r.json() == [{"a.b.c": 1, "x": 2}]
        r = c.get(items_url(did), params={"format": "jsonl", "limit": 1})  # unflattened, it is exported as stored
        assert r.status_code == 200 and r.json() == _deep(90, 100_000)


def test_html_of_sparse_wide_items_keeps_memory_flat(tmp_path, start_server):
    """4,000 items of one key each (40 kB) make 2,000 columns: the html export rendered them as one piece of 8
    million cells, a str each (+616 MiB for one GET); now a piece holds a bounded number of cells, and the page is
    the same: a header of the first 2,000 keys, each row its one cell under its key."""
    from html.parser import HTMLParser

    from tests.api.test_datasets_stream import Peak

    class Table(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell = False

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.rows[-1].append("")
                self.cell = True

        def handle_endtag(self, tag: str) -> None:
            self.cell = False

        def handle_data(self, data: str) -> None:
            if self.cell:
                self.rows[-1][-1] += data

    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}", "Accept-Encoding": "identity"},
                      timeout=120) as c:
        did = new_dataset(c)
        assert c.post(items_url(did), json=[{f"k{i}": 0} for i in range(4000)]).status_code == 201
        assert s.proc is not None
        with Peak(s.proc.pid) as peak:
            r = c.get(items_url(did), params={"format": "html"})
        assert r.status_code == 200
        assert peak.growth < 48 * 1024 * 1024, peak.growth / 1024 / 1024
    table = Table()
    table.feed(r.text)
    assert table.rows[0] == [f"k{i}" for i in range(2000)]
    assert len(table.rows) == 4001
    for i, row in enumerate(table.rows[1:]):
        assert row == ["0" if j == i else "" for j in range(2000)], i


def test_a_client_that_goes_away_from_rows_under_thousands_of_unwind_names_stops_the_work(tmp_path, start_server):
    """Each of 5,000 unwind names is a step for every row, whether the item has the field or not: a piece of
    EXPORT_BATCH rows was 30 s in one trip to a worker thread, which went on for nobody after the client left.
    Those steps count into a piece's cost now: the server is idle within about a second of the disconnect."""
    import time

    from tests.api.test_datasets_stream import cpu_seconds

    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    names = ",".join(f"x{i}" for i in range(5000))
    with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}", "Accept-Encoding": "identity"},
                      timeout=120) as c:
        did = new_dataset(c)
        assert c.post(items_url(did), json=[{"a": i} for i in range(5000)]).status_code == 201
        assert s.proc is not None
        pid = s.proc.pid
        with c.stream("GET", items_url(did), params={"unwind": names}) as r:
            assert r.status_code == 200
            got = b""
            for chunk in r.iter_raw():  # past the small first piece: the server is on to the next
                got += chunk
                if len(got) > 20:
                    break
            time.sleep(0.3)
        time.sleep(1.0)
        before = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - before < 0.25  # idle: no rendering goes on for nobody
        # csv: the same steps in the scan of the header's columns, before the first byte
        with pytest.raises(httpx.ReadTimeout):
            c.get(items_url(did), params={"unwind": names, "format": "csv"}, timeout=0.5)
        time.sleep(1.0)
        before = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - before < 0.25
