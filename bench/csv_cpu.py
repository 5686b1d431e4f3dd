"""Where a csv export row's CPU goes, in process (issue 13's csv goal), for a machine too busy for wall-clock numbers.

One batch of 4,000 stored items of bench/datasets.py (~500 B each, compact JSON as a push stores them), the default
query (no fields/omit/unwind/flatten), CPU seconds of this process per row (``time.process_time``), every case once
per round, in turns:

- ``endpoint``: what the export's worker thread does today (api/items.py ``_Rows``: for unchanged items
  ``CsvRenderer.stored_rows``, the lines by the C extension openkvs/datasets/_ccsv.c from the stored bytes);
- ``python path``: what it did before the extension, and still does without it or for other queries
  (``itemjson.load`` each item, ``Shape.iter_rows``, ``CsvRenderer.rows``), checked byte for byte against the
  endpoint before timing;
- its stages: ``itemjson.load``, ``orjson.loads`` of each item, of the batch joined (``[`` + ``,``.join + ``]``),
  and ``CsvRenderer.rows`` of parsed items;
- ``regex``: a PROTOTYPE (not shipped): one regular expression per item skeleton, made from a parsed item, matched
  against the stored bytes of each item, whose groups are the cells' texts (a string's JSON text without a backslash
  is its text; a number's stored text is its ``repr``), joined per line without parsing the item. Its output is
  checked byte for byte against ``CsvRenderer.rows`` for these items before it is timed;
- ``sql ...``: PROTOTYPES (not shipped, issue 13 "csv rendered by SQLite"): the lines rendered by SQLite's JSON
  functions (3.40 here: ``json_type``, ``->``, ``->>``) over the batch in an in-memory ``dataset_items`` table,
  one statement, the lines joined by ``group_concat``. ``sql statement``: byte for byte ``CsvRenderer.rows``
  (checked before timing; ``sql_statement``'s docstring says how); the others are floors, not csv: ``sql
  lookups``: only each cell's ``->`` (their lengths summed), ``sql json_tree``: one parse of each item, its leaves'
  atoms joined (no types, no column alignment).

``--http sqlite|postgres``: the same over HTTP, in turns (``--rounds`` each): ``curl`` of the whole csv export of
bench/datasets.py's data set (``BENCH_DS_ITEMS``, default 1,000,000 items; made or reused as ``python -m bench
datasets`` does), the endpoint as it is and with ``skipFailedPages=1`` (the same rows, as no item fails, through
the Python path), the server's CPU per row for each, and nginx serving the same bytes from a file.

    .venv/bin/python -m bench.csv_cpu --rounds 5
    .venv/bin/python -m bench.csv_cpu --http sqlite --rounds 3
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python -m bench.csv_cpu --only CASE --repeat R
      (instructions of one case: a run with R=3 minus one with R=1, divided by 2 x 4,000 rows)
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.datasets import item
from openkvs.api.items import _Rows
from openkvs.datasets import formats, itemjson, pipeline
from openkvs.datasets.query import parse_items_query

N = 4000


def _key(k: str) -> bytes:
    return re.escape(json.dumps(k, ensure_ascii=False).encode())


# A leaf of the prototype: a string without the delimiter (its text), a string with it (quoted: its JSON text, as it
# has no '"' when the item has no backslash), a number or a boolean (its stored text), null (no group matches).
_LEAF = rb'(?:"([^",]*)"|("[^"]*")|([-0-9tf][^,}\]"]*)|null)'


def _pattern(value: Any, leaves: list[str], path: str) -> bytes:
    if isinstance(value, dict):
        if not value:
            return rb"\{\}"
        return rb"\{" + b",".join(_key(k) + b":" + _pattern(v, leaves, f"{path}/{k}") for k, v in value.items()) + rb"\}"
    if isinstance(value, list):
        if not value:
            return rb"\[\]"
        return rb"\[" + b",".join(_pattern(v, leaves, f"{path}/{i}") for i, v in enumerate(value)) + rb"\]"
    leaves.append(path[1:])
    return _LEAF


def regex_lines(example: Any, columns: list[str]) -> Callable[[list[bytes]], bytes]:
    """The prototype for items of ``example``'s skeleton (no backslash, delimiter ",", no key holding "/")."""
    leaves: list[str] = []
    match = re.compile(_pattern(example, leaves, "")).fullmatch
    at = {p: i for i, p in enumerate(leaves)}
    cells = [f"g[{3 * at[c]}] or g[{3 * at[c] + 1}] or g[{3 * at[c] + 2}]" if c in at else 'b""' for c in columns]
    ns: dict[str, Any] = {}
    exec("def line(g):\n    return b','.join((" + ", ".join(cells) + ",))\n", ns)  # a bench: the prototype line function
    line = ns["line"]

    def lines(batch: list[bytes]) -> bytes:
        out = []
        for raw in batch:
            m = match(raw)
            if m is None or b"\\" in raw:
                raise ValueError("the prototype covers one skeleton, without backslashes")
            out.append(line(m.groups(b"")) or b'""')
        out.append(b"")
        return b"\r\n".join(out)

    return lines


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _json_path(column: str) -> str:
    """SQLite's path of a column of these items (a key, or an array index where the segment is digits): a bench
    shortcut, where shipped code would take the typed segments of the path index and refuse a key holding '"',
    '\\', '/' or a control character, and a column that two index entries name ({"a": [1]}, {"a": {"0": 1}})."""
    return "$" + "".join(f"[{seg}]" if seg.isdigit() else f'."{seg}"' for seg in column.split("/"))


def sql_statement(columns: list[str], delimiter: str = ",") -> str:
    """The prototype's statement over ``dataset_items`` (parameters: store id, lo, hi, count), giving (rows,
    non-NULL lines, the lines joined by CRLF with a final CRLF). Each cell as ``formats.cell_text`` of the leaf
    there: a string its ``->>`` text, a number its stored text (``->``: Python wrote it, so it is its ``repr``; a
    real whose text has no repr form, e.g. 1e16, makes the line NULL), true/false, "" for null, nothing or a
    container. A stored ``\\u0000`` makes the line NULL (``->>`` cuts the text there); a NULL line means: render
    this batch in Python. The cells come from a subquery run as a co-routine (ORDER BY, LIMIT), so the quoting
    (CsvRenderer's: delimiter, '"', CR or LF quoted, quotes doubled, a one-field empty line '""') reads each cell
    instead of its lookups again. Checked against the renderer on the bench batch only: no property test, as it
    was not shipped (2.6x the endpoint's CPU, BENCHMARKS.md)."""
    cells = []
    for i, col in enumerate(columns):
        p = _sql_text(_json_path(col))
        cells.append(
            f"CASE json_type(data, {p}) WHEN 'text' THEN data ->> {p} WHEN 'integer' THEN data -> {p} "
            f"WHEN 'real' THEN (SELECT iif((r GLOB '*.*' AND NOT r GLOB '*[eE]*') OR r GLOB '*e[+-][0-9][0-9]*', "
            f"r, NULL) FROM (SELECT data -> {p} AS r)) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"ELSE '' END AS c{i}"
        )
    d = _sql_text(delimiter)
    fields = []
    for i in range(len(columns)):
        c = f"c{i}"
        q = f"""iif(instr({c}, {d}) OR instr({c}, '"') OR instr({c}, char(13)) OR instr({c}, char(10)), """
        fields.append(q + f"""'"' || replace({c}, '"', '""') || '"', {c})""")
    line = f" || {d} || ".join(fields)  # (shipped: a balanced tree, as a chain passes SQLite's depth limit)
    if len(columns) == 1:
        line = f"""iif(c0 = '', '""', {line})"""
    return (
        "SELECT count(*), count(line), CAST(group_concat(line, char(13, 10)) || char(13, 10) AS BLOB) FROM "
        f"(SELECT iif(nul, NULL, {line}) AS line FROM (SELECT {', '.join(cells)}, instr(data, '\\u0000') AS nul "
        "FROM dataset_items WHERE store_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx LIMIT ?4))"
    )


def sql_floors(columns: list[str]) -> dict[str, str]:
    """The floors (not csv): the cells' lookups alone, and one json_tree walk of each item with its atoms joined."""
    lengths = " + ".join(f"length(data -> {_sql_text(_json_path(c))})" for c in columns)
    where = "FROM dataset_items WHERE store_id = ?1 AND idx >= ?2 AND idx < ?3"
    tree = "(SELECT group_concat(atom, ',') FROM json_tree(dataset_items.data) WHERE atom IS NOT NULL)"
    return {
        "sql lookups: each cell's -> alone": f"SELECT count(*), ?4, sum({lengths}) {where}",
        "sql json_tree: each item walked once, atoms joined": (
            f"SELECT count(*), ?4, CAST(group_concat({tree}, char(13, 10)) AS BLOB) {where}"
        ),
    }


def http(kind: str, rounds: int) -> None:
    """``--http``: MB/s of the csv export over HTTP with the C path and with the Python path, and nginx's."""
    from bench import harness as h
    from bench.datasets import _cpu, items_dataset
    from bench.download import MIB, curl, start_nginx

    ds = items_dataset(kind, int(os.environ.get("BENCH_DS_ITEMS", 1_000_000)))
    prefix = h.DATA / f"csv-http-{kind}"
    (prefix / "www").mkdir(parents=True, exist_ok=True)
    saved = prefix / "www" / "items.csv"
    with h.running(lambda: ds.backend.start(), lambda: start_nginx(prefix)) as (srv, ngx):
        url = f"{srv.url}/v2/datasets/{ds.store_id}/items?format=csv"
        cases = {"C path (as served)": url, "Python path (skipFailedPages=1)": url + "&skipFailedPages=1"}
        curl(url, ds.token, str(saved))
        general = prefix / "python.csv"
        curl(cases["Python path (skipFailedPages=1)"], ds.token, str(general))
        if not filecmp.cmp(saved, general, shallow=False):
            raise RuntimeError("the two paths' exports differ")
        general.unlink()
        best: dict[str, dict[str, float]] = {}
        for _ in range(rounds):
            for name, target in cases.items():
                cpu0 = _cpu(srv.pid)
                r = curl(target, ds.token)
                r["cpu_us_row"] = (_cpu(srv.pid) - cpu0) / ds.count * 1e6
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
            r = curl(f"{ngx.url}/items.csv", None)
            if "nginx" not in best or r["seconds"] < best["nginx"]["seconds"]:
                best["nginx"] = {**r, "cpu_us_row": 0.0}
    nginx = best["nginx"]["bytes"] / MIB / best["nginx"]["seconds"]
    print(f"{time.strftime('%H:%M', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; {kind}, {ds.count} items, "
          f"{best['nginx']['bytes'] / 1e6:.0f} MB of csv; best of {rounds} in turns")
    for name, r in best.items():
        mb_s = r["bytes"] / MIB / r["seconds"]
        print(f"| {name} | {r['seconds']:.2f} s | {mb_s:.1f} MB/s | {mb_s / nginx:.3f} | {r['cpu_us_row']:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", help="run this case alone (a prefix of its name), --repeat times, print nothing")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--http", choices=("sqlite", "postgres"), help="the export over HTTP instead (module docstring)")
    args = p.parse_args()
    if args.http:
        http(args.http, args.rounds)
        return
    batch = [orjson.dumps(item(i)) for i in range(N)]
    q = parse_items_query({"format": "csv"}, None)
    columns = pipeline.columns(q.shape, pipeline.block_paths(map(orjson.loads, batch)))
    assert columns is not None
    parsed = itemjson.load_batch(batch)

    def new_renderer() -> formats.Renderer:
        r = formats.renderer(q, label="bench", dataset_id="ID", public_url="http://127.0.0.1")
        r.start(columns)
        return r

    def endpoint() -> bytes:
        rows, out = _Rows(new_renderer(), q.shape, batch), []
        while (piece := rows.next_piece()) is not None:
            out.append(piece)
        return b"".join(out)

    def python_path() -> bytes:
        return new_renderer().rows([row for item in map(itemjson.load, batch) for row in q.shape.iter_rows(item)])

    # (formats' own optional import of the extension, a private name: whether the renderer has it)
    assert formats._ccsv is not None, "the C extension is not built (make install)"  # type: ignore[attr-defined]
    assert python_path() == endpoint(), "the extension's bytes differ from the Python path's"
    joined = b"[" + b",".join(batch) + b"]"
    prototype = regex_lines(parsed[0], columns)
    assert prototype(batch) == endpoint(), "the prototype's bytes differ from the renderer's"
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE dataset_items (store_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, "
        "PRIMARY KEY (store_id, idx)) WITHOUT ROWID"
    )
    db.executemany("INSERT INTO dataset_items VALUES ('s', ?, ?)", list(enumerate(batch)))

    def sql(statement: str) -> Callable[[], Any]:
        return lambda: db.execute(statement, ("s", 0, N, N)).fetchone()

    statement = sql_statement(columns)
    rows, lines, data = sql(statement)()
    assert rows == lines == N and data == endpoint(), "the SQL prototype's bytes differ from the renderer's"
    cases: dict[str, Callable[[], Any]] = {
        "endpoint (C lines from stored bytes)": endpoint,
        "python path (load, shape, render)": python_path,
        "itemjson.load each": lambda: itemjson.load_batch(batch),
        "orjson.loads each": lambda: list(map(orjson.loads, batch)),
        "orjson.loads of the joined batch": lambda: orjson.loads(joined),
        "CsvRenderer.rows of parsed items": lambda: new_renderer().rows(parsed),
        "regex prototype (stored bytes to lines)": lambda: prototype(batch),
        "sql statement (byte-identical)": sql(statement),
        **{name: sql(text) for name, text in sql_floors(columns).items()},
    }
    if args.only:
        case = next(case for name, case in cases.items() if name.startswith(args.only))
        for _ in range(args.repeat):
            case()
        return
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, case in cases.items():
            t0 = time.process_time()
            case()
            us = (time.process_time() - t0) / N * 1e6
            best[name] = min(best.get(name, us), us)
    print(f"{time.strftime('%H:%M', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; {N} rows of "
          f"{len(endpoint()) / N:.0f} B; best of {args.rounds} rounds in turns, CPU us per row")
    base = best["python path (load, shape, render)"]
    for name, us in best.items():
        print(f"| {name} | {us:.2f} | {us / base:.2f} |")


if __name__ == "__main__":
    main()
