"""The README's "Datasets" curl block, run as written against a live server (both backends): every command works
and gives what its comment says."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tests.cli.test_readme_blocks import bash, block, live


def test_the_readme_dataset_block_runs_as_written(server: Any, tmp_path: Path) -> None:
    setup = live('export TOKEN=okvs_...\nexport API=http://127.0.0.1:8000/v2\n', server)
    out = bash(setup + live(block("## Datasets", "sh"), server), server, tmp_path)
    # curl prints each answer as it comes, without a newline of its own: read them one after the other
    dec = json.JSONDecoder()
    created, i = dec.raw_decode(out)
    assert created["data"]["name"] == "products"
    pushed, i = dec.raw_decode(out, i)
    assert pushed == {}
    first, second, rest = out[i:].split("\n", 2)
    assert [json.loads(first), json.loads(second)] == [{"url": "https://a.example"}, {"url": "https://b.example"}]
    assert rest.startswith("\ufeff")  # csv has a BOM by default
    rows = list(csv.reader(io.StringIO(rest.removeprefix("\ufeff"))))
    assert rows == [["url", "price"], ["https://a.example", "3"], ["https://b.example", ""]]
    assert (tmp_path / "products.xlsx").read_bytes()[:2] == b"PK"
