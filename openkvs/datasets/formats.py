"""One renderer per export format (API-datasets.md section 6): rows in, bytes out, a batch at a time.

The caller (the items endpoint) drives a renderer as::

    r = renderer(query, label=..., dataset_id=..., public_url=...)
    send(r.start(columns))          # columns: a list for tabular formats (r.tabular), else None
    for batch in batches:           # from a worker thread; each call returns that batch's bytes (maybe b"")
        send(r.rows(rows) if not raw else r.raw_json(stored_item_bytes))
    send(r.end())

Nothing is buffered past one batch (xlsx keeps only its compressor's window), so memory stays flat whatever
the row count. ``raw_json`` (json and jsonl only, when ``query.shape.identity``) copies stored compact item bytes
without parsing them: they are the same bytes ``rows`` would write (section 4.4 stores compact JSON, UTF-8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from openkvs.datasets import xml
from openkvs.datasets.columns import cells
from openkvs.datasets.query import ItemsQuery

if TYPE_CHECKING:
    from openkvs.storage.datasets import Piece

try:  # C, built by hatch_build.py where a compiler is: csv lines straight from stored item bytes (CsvRenderer)
    from openkvs.datasets import _ccsv
except ImportError:  # no compiler at install: the Python path renders every row
    _ccsv = None  # type: ignore[assignment]

BOM = b"\xef\xbb\xbf"
CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xml": "application/xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
}
_SURROGATE = re.compile("[\ud800-\udfff]")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def utf8(text: str) -> bytes:
    """UTF-8 of text that may hold lone surrogates (no UTF-8 form): those become U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def json_utf8(text: str) -> bytes:
    """UTF-8 of JSON text: a lone surrogate can only sit inside a string, where ``\\udXXX`` is its JSON escape."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def cell_text(value: Any) -> str:
    """A cell of the text formats (6.1): a string is its text, a number its JSON text, true/false, null empty."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return xml.scalar(value)


class Renderer:
    content_type: str
    filename_ext: str
    tabular = False  # needs the columns in start()
    # Every format, not only html: a browser runs the scripts of an XHTML element in an xml or rss document (an
    # item {"@": {"xmlns": "http://www.w3.org/1999/xhtml"}, "script": ...}), on the API's origin, the console's.
    extra_headers: dict[str, str] = {"Content-Security-Policy": "sandbox"}

    def __init__(self, q: ItemsQuery) -> None:
        self.options = q.format
        self.filename_ext = q.format.name
        self.content_type = CONTENT_TYPES[q.format.name]
        self._bom = BOM if q.format.bom else b""

    def start(self, columns: list[str] | None) -> bytes:
        raise NotImplementedError

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        raise NotImplementedError

    def raw_json(self, items: list[bytes]) -> bytes:
        raise TypeError(f"{self.options.name} can't copy stored JSON")

    def stored_rows(self, items: list[bytes], rows_of: Callable[[bytes], list[dict[str, Any]]]) -> bytes:
        """``rows`` of the rows of stored items whose shape leaves them as they are (a row per object item, at most
        one batch of them): ``rows_of`` gives one stored item's rows, the general path."""
        return self.rows([row for raw in items for row in rows_of(raw)])

    @property
    def renders_joined(self) -> bool:
        """Whether ``joined_rows`` takes storage's joined pieces of unchanged items (csv, by _ccsv.c)."""
        return False

    def joined_rows(self, joined: Piece, rows_of: Callable[[bytes], list[dict[str, Any]]]) -> Piece:
        raise TypeError(f"{self.options.name} can't render joined pieces")

    # raw_joined(items joined by raw_separator): the pieces of what raw_json gives for those items, from storage's
    # joined piece (bytes, or a list of buffers: storage/datasets.py Piece), which is not copied: it may be megabytes.
    raw_separator = b"\n"

    def raw_joined(self, joined: Piece) -> list[Piece]:
        raise TypeError(f"{self.options.name} can't copy stored JSON")

    def end(self) -> bytes:
        return b""


class JsonRenderer(Renderer):
    """``[`` + rows joined by ``,\\n`` + ``]`` (6.3)."""

    def __init__(self, q: ItemsQuery) -> None:
        super().__init__(q)
        self._first = True

    def start(self, columns: list[str] | None) -> bytes:
        return self._bom + b"["

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        body = ",\n".join(map(_compact, rows))
        out = json_utf8(body if self._first else ",\n" + body)
        self._first = False
        return out

    def raw_json(self, items: list[bytes]) -> bytes:
        if not items:
            return b""
        joined = b",\n".join(items)
        out = joined if self._first else b",\n" + joined
        self._first = False
        return out

    raw_separator = b",\n"

    def raw_joined(self, joined: Piece) -> list[Piece]:
        out = [joined] if self._first else [b",\n", joined]
        self._first = False
        return out

    def end(self) -> bytes:
        return b"]"


class JsonlRenderer(Renderer):
    """Each row and ``\\n`` (6.4)."""

    def start(self, columns: list[str] | None) -> bytes:
        return self._bom

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        return json_utf8("\n".join(map(_compact, rows)) + "\n")

    def raw_json(self, items: list[bytes]) -> bytes:
        if not items:
            return b""
        return b"\n".join(items) + b"\n"

    def raw_joined(self, joined: Piece) -> list[Piece]:
        # (buffers: the line's end one more of them, in the same send)
        return [[*joined, b"\n"]] if isinstance(joined, list) else [joined, b"\n"]


class TabularRenderer(Renderer):
    tabular = True

    def __init__(self, q: ItemsQuery) -> None:
        super().__init__(q)
        self.columns: list[str] = []

    def start(self, columns: list[str] | None) -> bytes:
        if not columns:
            raise ValueError("a tabular format needs its columns")
        self.columns = columns
        return self._bom + self.header()

    def header(self) -> bytes:
        raise NotImplementedError

    def values(self, row: dict[str, Any]) -> list[Any]:
        """The row's leaf values in column order, None where it has none."""
        found = cells(row)
        get = found.get
        return [get(c) for c in self.columns]


class CsvRenderer(TabularRenderer):
    """RFC 4180 with the choices of 6.5: CRLF after every line, quotes exactly when needed, and a line of one
    empty field (a one-column export) written ``""``: readers skip a blank line, which would lose the row.

    A row's cell texts are gathered in column order (``row_texts``) and joined; whether any needs quotes is asked
    of the whole line at once (it holds one delimiter fewer than columns, no ``"``, CR or LF: string operations
    in C), and only a line that fails is quoted field by field. (The csv module's writer, tried first, asks
    that of every character, through a function call: slower than all of this.)"""

    def __init__(self, q: ItemsQuery) -> None:
        super().__init__(q)
        self._delimiter = d = q.format.delimiter
        self._needs_quotes = re.compile("[" + re.escape(d + '"\r\n') + "]")
        self._table: object | None = None  # _ccsv's columns, when it can render them

    def start(self, columns: list[str] | None) -> bytes:
        out = super().start(columns)
        if _ccsv is not None:
            self._table = _ccsv.prepare(self.columns, self._delimiter)
        return out

    @property
    def renders_joined(self) -> bool:
        """Whether ``joined_rows`` takes storage's joined pieces (_ccsv.c is there for these columns; after start)."""
        return self._table is not None

    def joined_rows(self, joined: Piece, rows_of: Callable[[bytes], list[dict[str, Any]]]) -> Piece:
        """``stored_rows`` of the stored items in ``joined`` (storage's joined piece: items separated by b"\\n"),
        without a bytes object per item: _ccsv.c finds them in the piece. Only when ``renders_joined``. A piece of
        buffers (storage's rows, each items joined by b"\\n" after at most one b"\\n" of the join) gives the lines
        of each buffer, as a list: neither the rows nor their lines joined into one object."""
        assert self._table is not None
        if not isinstance(joined, list):
            return self._joined_lines(joined, 0, rows_of)
        out: list[bytes | memoryview] = []
        for part in joined:
            at = 1 if part[:1] == b"\n" else 0
            if at < len(part):
                out.append(self._joined_lines(part, at, rows_of))
        return out

    def _joined_lines(
        self, joined: bytes | memoryview, at: int, rows_of: Callable[[bytes], list[dict[str, Any]]]
    ) -> bytes:
        pieces = []
        n = len(joined)
        while at < n:
            piece, at = _ccsv.joined_lines(self._table, joined, at)
            pieces.append(piece)
            if at < n:  # an item left to Python: the general path for it, then the C again after it
                joined = bytes(joined)  # (a view, a cut row: bytes to search; a bytes object stays itself)
                end = joined.find(b"\n", at)
                end = n if end < 0 else end
                pieces.append(self.rows(rows_of(joined[at:end])))
                at = end + 1
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def stored_rows(self, items: list[bytes], rows_of: Callable[[bytes], list[dict[str, Any]]]) -> bytes:
        """The lines of unchanged stored items by _ccsv.c, from their bytes, without parsing them into values (8.5
        us a row in Python, BENCHMARKS.md): byte for byte ``rows`` of the parsed items. An item it is not sure of
        (its docstring lists them) goes through ``rows_of`` and ``rows``, and the C goes on after it."""
        if self._table is None:
            return super().stored_rows(items, rows_of)
        pieces = []
        at, n = 0, len(items)
        while at < n:
            piece, at = _ccsv.lines(self._table, items, at)
            pieces.append(piece)
            if at < n:
                pieces.append(self.rows(rows_of(items[at])))
                at += 1
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _field(self, value: Any) -> str:
        s = cell_text(value)
        if self._needs_quotes.search(s) is None:
            return s
        return '"' + s.replace('"', '""') + '"'

    def header(self) -> bytes:
        if self.options.skip_header_row:
            return b""
        return utf8((self._delimiter.join(map(self._field, self.columns)) or '""') + "\r\n")

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        d, search = self._delimiter, self._needs_quotes.search
        plain = len(self.columns) - 1  # delimiters in a line whose fields hold none
        lines = []
        for texts in row_texts(rows, self.columns):
            line = d.join(texts)
            if '"' in line or "\r" in line or "\n" in line:
                line = d.join([s if search(s) is None else '"' + s.replace('"', '""') + '"' for s in texts])
            elif line.count(d) != plain:  # only delimiters inside fields (text with commas): quote those fields
                line = d.join(['"' + s + '"' if d in s else s for s in texts])
            lines.append(line or '""')  # one empty field: quoted, as a blank line is skipped by readers
        lines.append("")
        return utf8("\r\n".join(lines))


def row_texts(rows: list[dict[str, Any]], columns: list[str]) -> list[tuple[str, ...]]:
    """Each row's cell texts (6.1, ``cell_text``) in column order, ``""`` where it has none: a template dict of
    the columns copied per row, the row's leaves written over it (a later leaf of one path wins, as in
    ``columns.cells``), one ``itemgetter``."""
    template: dict[str, str] = dict.fromkeys(columns, "")
    getter: Callable[[dict[str, str]], Any]
    if len(columns) == 1:
        only = columns[0]
        getter = lambda cells: (cells[only],)  # noqa: E731  # itemgetter of one key gives the bare value
    else:
        getter = itemgetter(*columns)
    out: list[tuple[str, ...]] = []
    append = out.append
    for row in rows:
        found = template.copy()
        for key, value in row.items():
            t = type(value)
            if t is str:
                found[key] = value
            elif t is dict or t is list:
                if value:
                    _leaf_texts(key, value, found)
            elif value is None:
                found[key] = ""
            elif t is bool:
                found[key] = "true" if value else "false"
            else:
                found[key] = repr(value)  # an int or a float: its JSON text
        append(getter(found))
    return out


def _leaf_texts(prefix: str, value: dict[str, Any] | list[Any], out: dict[str, str]) -> None:
    """``row_texts`` of one nested value. Recursive: one call per container; the depth is bounded by what a push
    accepts (128 levels)."""
    for key, inner in value.items() if type(value) is dict else enumerate(value):
        t = type(inner)
        if t is str:
            out[f"{prefix}/{key}"] = inner
        elif t is dict or t is list:
            if inner:
                _leaf_texts(f"{prefix}/{key}", inner, out)
        elif inner is None:
            out[f"{prefix}/{key}"] = ""
        elif t is bool:
            out[f"{prefix}/{key}"] = "true" if inner else "false"
        else:
            out[f"{prefix}/{key}"] = repr(inner)


def html_escape(s: str) -> str:
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace('"', "&quot;").replace("'", "&#39;")


class HtmlRenderer(TabularRenderer):
    """The page of 6.6: one table, a header line, a line per row."""

    def __init__(self, q: ItemsQuery, label: str) -> None:
        super().__init__(q)
        self._label = label

    def header(self) -> bytes:
        head = "".join(f"<th>{html_escape(c)}</th>" for c in self.columns)
        return utf8(
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>Dataset {html_escape(self._label)}</title></head><body>\n<table>\n<tr>{head}</tr>\n"
        )

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        out = []
        for row in rows:
            out.append("<tr>")
            out.extend(f"<td>{html_escape(cell_text(v))}</td>" for v in self.values(row))
            out.append("</tr>\n")
        return utf8("".join(out))

    def end(self) -> bytes:
        return b"</table>\n</body></html>\n"


class XmlRenderer(Renderer):
    """6.8: a root element, one element per row."""

    def start(self, columns: list[str] | None) -> bytes:
        return self._bom + f'<?xml version="1.0" encoding="UTF-8"?>\n<{self.options.xml_root}>\n'.encode()

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        out: list[str] = []
        tag = self.options.xml_row
        for row in rows:
            xml.render(out, tag, row)
            out.append("\n")
        return "".join(out).encode()

    def end(self) -> bytes:
        return f"</{self.options.xml_root}>\n".encode()


class RssRenderer(Renderer):
    """6.9: an RSS 2.0 channel, one ``item`` per row (rendered as in 6.8)."""

    def __init__(self, q: ItemsQuery, label: str, dataset_id: str, public_url: str) -> None:
        super().__init__(q)
        self._title = q.format.feed_title or f"Dataset {label}"
        self._description = q.format.feed_description or f'Items in dataset with id "{dataset_id}".'
        self._link = f"{public_url.rstrip('/')}/v2/datasets/{dataset_id}/items?format=rss"

    def start(self, columns: list[str] | None) -> bytes:
        return self._bom + (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            f"<title>{xml.text(self._title)}</title><link>{xml.text(self._link)}</link>"
            f"<description>{xml.text(self._description)}</description>\n"
        ).encode()

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        out: list[str] = []
        for row in rows:
            xml.render(out, "item", row)
            out.append("\n")
        return "".join(out).encode()

    def end(self) -> bytes:
        return b"</channel></rss>\n"


def renderer(q: ItemsQuery, *, label: str, dataset_id: str, public_url: str) -> Renderer:
    """The renderer of the query's format. ``label``: the dataset's name, or its ID if unnamed (HTML title, RSS
    title); ``public_url``: the server's public base URL (the RSS channel link)."""
    name = q.format.name
    if name == "json":
        return JsonRenderer(q)
    if name == "jsonl":
        return JsonlRenderer(q)
    if name == "csv":
        return CsvRenderer(q)
    if name == "html":
        return HtmlRenderer(q, label)
    if name == "xml":
        return XmlRenderer(q)
    if name == "rss":
        return RssRenderer(q, label, dataset_id, public_url)
    if name == "xlsx":
        from openkvs.datasets.xlsx import XlsxRenderer

        return XlsxRenderer(q)
    raise ValueError(f"unknown format {name!r}")
