"""Instructions of a csv export's rendering of unchanged items (api/items.py ``render``: ``CsvRenderer.joined_rows``
of each piece, the lines by openkvs/datasets/_ccsv.c), for a machine too busy for timings: 4,000 of
bench/datasets.py's items (~500 B each, compact JSON as stored) in PostgreSQL's pieces (a binary COPY of packed rows
of ITEMS_PER_ROW items, fed to storage/postgres/datasets.py ``_Joined`` in slices of 64 KiB as asyncpg hands over
socket reads: each piece a list of buffers, one per slice), rendered once (warm-up, checked byte for byte against
the Python path), then N times more. Per item: (count at N=4 - count at N=0) / 16,000. Run each checkout through
PYTHONPATH; a fixed hash seed keeps the counts of two runs within ~1 % (else ~2 %).

    PYTHONHASHSEED=0 PYTHONPATH=$PWD valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/cg_csv.py 4
    # then 0; read "Collected"
"""

import json
import struct
import sys
from typing import Any

from bench.datasets import item
from openkvs.api.download import SEND_PIECE
from openkvs.api.items import EXPORT_BATCH, _rows_of
from openkvs.datasets import formats, itemjson, pipeline
from openkvs.datasets.query import parse_items_query
from openkvs.storage.datasets import ITEMS_PER_ROW
from openkvs.storage.postgres.copyformat import SIGNATURE
from openkvs.storage.postgres.datasets import _Joined

ITEMS = 4000
SLICE = 64 * 1024

N = int(sys.argv[1])
batch = [json.dumps(item(i), separators=(",", ":")).encode() for i in range(ITEMS)]
copy = [SIGNATURE + struct.pack("!ii", 0, 0)]
for first in range(0, ITEMS, ITEMS_PER_ROW):  # (the packed rows: idx of the last item, n, the items joined)
    row = batch[first : first + ITEMS_PER_ROW]
    data = b"\n".join(row)
    copy.append(struct.pack("!hiqiii", 3, 8, first + len(row) - 1, 4, len(row), len(data)) + data)
copy.append(struct.pack("!h", -1))
stream = b"".join(copy)
joined = _Joined(b"\n", SEND_PIECE, EXPORT_BATCH, 0, ITEMS, False, buffers=True)
joined.start()
pieces: list[Any] = []
for at in range(0, len(stream), SLICE):
    pieces += joined.feed(stream[at : at + SLICE])
pieces.append(joined.end())

q = parse_items_query({"format": "csv"}, None)
columns = pipeline.columns(q.shape, pipeline.block_paths(map(json.loads, batch)))
renderer = formats.renderer(q, label="bench", dataset_id="ID", public_url="http://127.0.0.1")
renderer.start(columns)
assert renderer.renders_joined, "the C extension is not built (hatch_build.py)"
rows_of = _rows_of(q.shape)


def rendered(piece: Any) -> bytes:
    got = renderer.joined_rows(piece, rows_of)
    return b"".join(got) if isinstance(got, list) else got  # type: ignore[no-any-return]


python_path = renderer.rows(itemjson.load_batch(batch))
assert b"".join(map(rendered, pieces)) == python_path, "the C lines differ from the Python path's"
for _ in range(N):
    for piece in pieces:
        renderer.joined_rows(piece, rows_of)
