"""Instructions of a dataset push's preparation (api/items.py ``prepare_push_body``, no fields schema), for a
machine too busy for timings: a body of 1,000 of bench/datasets.py's items (~500 B each) prepared once (warm-up),
then N times more. Per item: (count at N=4 - count at N=0) / 4,000. Run each checkout through PYTHONPATH.

    PYTHONPATH=$PWD valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/cg_push.py 4
    # then 0; read "Collected"
"""

import json
import sys

from bench.datasets import item
from openkvs.api import items

N = int(sys.argv[1])
raw = json.dumps([item(i) for i in range(1000)], separators=(",", ":")).encode()
items.prepare_push_body(raw, None)
for _ in range(N):
    items.prepare_push_body(raw, None)
