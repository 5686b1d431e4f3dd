"""The CSV renderer as it was on main at e8825be, before a row's cells were gathered over a template of the columns and
quoting was checked a line at a time (issue 13, exports): frozen here so that tests can compare today's csv bytes
with the bytes the old renderer made for the same rows. Do not "fix" or update this file: it is the reference, not
the code."""

# ruff: noqa
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    return _compact(value)


def cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return scalar(value)


def cells(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, (dict, list)):
            if value:
                _walk(key, value, out)
        else:
            out[key] = value
    return out


def _walk(prefix: str, value: Any, out: dict[str, Any]) -> None:
    stack: list[tuple[str, Iterable[tuple[Any, Any]]]] = [(prefix, _children(value))]
    while stack:
        path, children = stack[-1]
        for key, inner in children:
            name = f"{path}/{key}"
            if isinstance(inner, (dict, list)):
                if inner:
                    stack.append((name, _children(inner)))
                    break
            else:
                out[name] = inner
        else:
            stack.pop()


def _children(value: Any) -> Iterable[tuple[Any, Any]]:
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


class CsvReference:
    """``start(columns)`` (the BOM and the header line) and ``rows(rows)`` of the old ``CsvRenderer``."""

    def __init__(self, delimiter: str = ",", bom: bool = True, skip_header_row: bool = False) -> None:
        self._delimiter = d = delimiter
        self._bom = b"\xef\xbb\xbf" if bom else b""
        self._skip_header_row = skip_header_row
        self._needs_quotes = re.compile("[" + re.escape(d + '"\r\n') + "]")
        self.columns: list[str] = []

    def _field(self, value: Any) -> str:
        s = cell_text(value)
        if self._needs_quotes.search(s) is None:
            return s
        return '"' + s.replace('"', '""') + '"'

    def start(self, columns: list[str]) -> bytes:
        self.columns = columns
        if self._skip_header_row:
            return self._bom
        return self._bom + utf8((self._delimiter.join(map(self._field, self.columns)) or '""') + "\r\n")

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        d, search, columns = self._delimiter, self._needs_quotes.search, self.columns
        lines = []
        for row in rows:
            get = cells(row).get
            line = []
            for column in columns:
                value = get(column)
                if value is None:
                    line.append("")
                    continue
                s = value if type(value) is str else scalar(value)
                line.append(s if search(s) is None else '"' + s.replace('"', '""') + '"')
            lines.append(d.join(line) or '""')
        lines.append("")
        return utf8("\r\n".join(lines))
