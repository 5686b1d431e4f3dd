"""The pieces of an export of unchanged stored items (api/items.py ``_Rows``): cut where the items' sizes add up to
PIECE_BYTES or at EXPORT_BATCH items, as ``_piece`` cuts rows, without a Python step per item; the pieces together
are the rows of the whole batch."""

from __future__ import annotations

import random
from typing import Any

import pytest

from openkvs.api import items as export
from openkvs.datasets import formats
from openkvs.datasets.query import parse_items_query


class Recorder:
    """A renderer that records the items of each piece."""

    def __init__(self) -> None:
        self.pieces: list[list[bytes]] = []

    def stored_rows(self, items: list[bytes], rows_of: Any) -> bytes:
        self.pieces.append(list(items))
        return b"".join(items)


@pytest.mark.parametrize("first", [None, export.FIRST_PIECE, 1])
@pytest.mark.parametrize("seed", range(8))
def test_stored_pieces_are_cut_as_rows_are(seed: int, first: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``first``: the export's first piece is small (its first byte waits for it), the others as before."""
    rnd = random.Random(seed)
    monkeypatch.setattr(export, "PIECE_BYTES", rnd.choice([1000, 5000, 20_000]))
    monkeypatch.setattr(export, "EXPORT_BATCH", rnd.choice([7, 50, 4000]))
    batch = [b"{%s}" % (b"x" * rnd.choice([0, 10, 300, 3000, 25_000])) for _ in range(rnd.randint(1, 400))]
    shape = parse_items_query({"format": "csv"}, None).shape
    recorder = Recorder()
    rows = export._Rows(recorder, shape, batch, first=first)
    out = []
    while (piece := rows.next_piece()) is not None:
        out.append(piece)
    expected = []  # the oracle: _piece over (item, its size), as rows of parsed items are cut
    found = iter([(raw, len(raw)) for raw in batch])
    most = first
    while got := export._piece(found, most)[0]:
        expected.append(got)
        most = None
    if first is not None:
        assert len(recorder.pieces[0]) <= first
    assert recorder.pieces == expected
    assert b"".join(out) == b"".join(batch)


def test_a_csv_export_of_stored_items_is_the_rows_of_the_parsed_items() -> None:
    q = parse_items_query({"format": "csv"}, None)
    batch = [b'{"a":%d,"b":"x,y"}' % i for i in range(9000)]  # more than EXPORT_BATCH: several pieces
    renderer = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
    renderer.start(["a", "b"])
    rows = export._Rows(renderer, q.shape, batch)
    out = b""
    while (piece := rows.next_piece()) is not None:
        out += piece
    assert out == b"".join(b'%d,"x,y"\r\n' % i for i in range(9000))


def test_the_first_piece_of_reshaped_rows_is_small_too() -> None:
    """Rows that are not the stored items (here ``fields``) are cut the same way: the first piece at most ``first``
    rows (what the answer's first byte waits for), the next ones EXPORT_BATCH."""
    q = parse_items_query({"format": "csv", "fields": "a"}, None)
    assert not q.shape.identity
    batch = [b'{"a":%d,"b":2}' % i for i in range(9000)]
    renderer = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
    renderer.start(["a"])
    rows = export._Rows(renderer, q.shape, batch, first=export.FIRST_PIECE)
    pieces = []
    while (piece := rows.next_piece()) is not None:
        pieces.append(piece)
    rest = 9000 - export.FIRST_PIECE
    full, left = divmod(rest, export.EXPORT_BATCH)
    assert [p.count(b"\r\n") for p in pieces] == [export.FIRST_PIECE] + [export.EXPORT_BATCH] * full + [left] * (left > 0)
    assert b"".join(pieces) == b"".join(b"%d\r\n" % i for i in range(9000))


def test_rows_unwound_from_one_large_item_go_many_to_a_piece() -> None:
    """Each row unwound from an item was charged the item's whole size: the 100,000 rows of one 1.4 MB item went
    three to a piece (33,000 trips to the worker thread; 500,000 elements: 110 s of json). A row costs its own
    size now and the item's size once: EXPORT_BATCH rows to a piece, and the same bytes."""
    n = 100_000
    q = parse_items_query({"format": "json", "unwind": "arr"}, None)
    raw = b'{"id":1,"arr":[' + b",".join(b'{"v":%d}' % i for i in range(n)) + b"]}"
    renderer = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
    rows = export._Rows(renderer, q.shape, [raw])
    pieces = []
    while (piece := rows.next_piece()) is not None:
        pieces.append(piece)
    assert len(pieces) <= n // export.EXPORT_BATCH + 2
    whole = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
    assert b"".join(pieces) == whole.rows([{"id": 1, "v": i} for i in range(n)])


def test_a_piece_of_sparse_wide_rows_holds_a_bounded_number_of_cells() -> None:
    """4,000 items of one key each under 2,000 columns were one html piece of 8 million cells (a str each: +616 MiB
    for one export); a row costs CELL_BYTES a column now, so a piece holds at most about PIECE_BYTES / CELL_BYTES
    cells, for stored items and for reshaped rows, and the rows are the same."""
    columns = [f"k{i}" for i in range(2000)]
    batch = [b'{"k%d":0}' % i for i in range(4000)]
    for query in ({"format": "html"}, {"format": "html", "omit": "zz"}, {"format": "csv", "omit": "zz"}):
        q = parse_items_query(query, None)
        renderer = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
        renderer.start(columns)
        rows = export._Rows(renderer, q.shape, batch)
        pieces = []
        while (piece := rows.next_piece()) is not None:
            pieces.append(piece)
        most_rows = max(p.count(b"\n") for p in pieces)
        assert most_rows * len(columns) <= 2 * export.PIECE_BYTES // export.CELL_BYTES, (query, most_rows)
        whole = formats.renderer(q, label="x", dataset_id="x", public_url="http://x")
        whole.start(columns)
        assert b"".join(pieces) == whole.rows([{f"k{i}": 0} for i in range(4000)]), query
