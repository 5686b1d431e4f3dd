"""Shared by the dataset export tests: a driver that renders rows the way the items endpoint does, and
brute-force oracles written from the contract text (API-datasets.md 6.1, 6.2), independent of the code."""

from __future__ import annotations

from typing import Any

from openkvs.datasets.formats import renderer
from openkvs.datasets.pipeline import ColumnCollector, block_paths, columns
from openkvs.datasets.query import parse_items_query


def export(items: list[Any], params: dict[str, str] | None = None, *, schema=None, label="my-data",
           dataset_id="DSID", public_url="http://127.0.0.1:8000", batch=3, raw=False) -> bytes:
    """The whole export of ``items`` (ascending, all selected) as the endpoint streams it."""
    q = parse_items_query(params or {}, schema)
    if q.desc:
        items = list(reversed(items))
    r = renderer(q, label=label, dataset_id=dataset_id, public_url=public_url)
    cols = None
    if r.tabular:
        ordered = list(reversed(items)) if q.desc else items  # the header reads ascending order
        cols = columns(q.shape, block_paths(ordered))
        if cols is None:
            c = ColumnCollector(q.shape)
            c.add_items(ordered)
            cols = c.columns()
    out = [r.start(cols)]
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        if raw:
            import json
            out.append(r.raw_json([json.dumps(x, ensure_ascii=False, separators=(",", ":")).encode() for x in chunk]))
        else:
            out.append(r.rows([row for item in chunk for row in q.shape.rows(item)]))
    out.append(r.end())
    return b"".join(out)


def oracle_cells(row: dict[str, Any]) -> dict[str, Any]:
    """6.1 by the letter: depth-first in key order, `/`-joined paths, leaves only, later duplicate wins."""
    out: dict[str, Any] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{path}/{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{path}/{i}", v)
        else:
            out[path] = value

    for k, v in row.items():
        walk(k, v)
    return out


def oracle_columns(shape, items: list[Any]) -> list[str] | None:
    """6.2 by the letter, from the rows themselves; None for "no columns"."""
    fields = shape.group_fields
    rows = [r for item in items for r in shape.header_rows(item)]
    if fields is None:
        seen: dict[str, None] = {}
        for r in rows:
            for path in oracle_cells(r):
                seen.setdefault(path)
        names = [n for n in seen if len(n) <= 200]
    else:
        groups: list[dict[str, None]] = [{} for _ in fields] + [{}]
        # Keys outside `fields` only come from unwinding after the simplified pick: they belong to the group of
        # the unwound field (the documented decision), else at the end.
        other = next((fields.index(u) for u in shape.unwind if u in fields), len(fields))
        for r in rows:
            for k, v in r.items():
                g = fields.index(k) if k in fields else other
                for path in oracle_cells({k: v}):
                    if len(path) <= 200:
                        groups[g].setdefault(path)
        names = []
        for i, g in enumerate(groups):
            if g:
                names += [n for n in g if n not in names]
            elif i < len(fields) and fields[i] not in names and len(fields[i]) <= 200:
                names.append(fields[i])
    return names[:2000] or None
