"""The ``xlsx`` export (API-datasets.md section 6.7): an Office Open XML workbook written as a streamed ZIP.

The worksheets come first, written row by row into deflated ZIP entries whose sizes and CRC follow each entry
in a data descriptor (flag bit 3), so nothing waits for the end; the workbook parts that list the sheets
(``xl/workbook.xml``, its relationships, ``[Content_Types].xml``) come last, when the number of sheets is known.
Part order inside the package is free (OPC); readers go by the central directory, as Excel, LibreOffice and
openpyxl (Python's zipfile) do.

Why not openkvs/zipwriter.py: it lays out stored entries whose sizes and CRCs are known before the first byte (so
it can send Content-Length and serve ranges); here neither is known until a sheet ends, and sheet XML compresses
about tenfold.

ZIP64: an entry of 4 GiB or more (a huge sheet) gets 8-byte sizes in its data descriptor and a ZIP64 extra field
in its central header; offsets past 4 GiB get ZIP64 extras and the ZIP64 end records. Local headers carry no
ZIP64 extra (sizes are unknown when they are written): what Go's archive/zip writer does too. Readers that go by
the central directory take it; a reader that walks local headers alone could misread only entries over 4 GiB.

Cells: strings as inline strings (``t="inlineStr"``); numbers as numeric cells when finite and either non-integer
or an integer of at most 15 digits, else as strings (Excel keeps 15 significant digits); booleans as boolean cells;
null and missing as no cell. Strings lose the characters XML 1.0 forbids and are cut to Excel's 32,767 characters
(counted in UTF-16 units, as Excel counts; a surrogate pair is never split). A literal ``_xHHHH_`` in a string
is escaped as ``_x005F_xHHHH_``: spreadsheet readers decode that pattern as a character escape.
"""

from __future__ import annotations

import math
import re
import struct
import time
import zlib
from typing import Any

from openkvs.crc import crc32
from openkvs.datasets import xml
from openkvs.datasets.columns import cells
from openkvs.datasets.formats import TabularRenderer
from openkvs.datasets.query import ItemsQuery

SHEET_ROWS = 1_048_575  # data rows per sheet: Excel's 1,048,576 rows minus the header
MAX_CELL_TEXT = 32_767
_LIMIT32 = 0xFFFFFFFF
_LIMIT16 = 0xFFFF
_LEVEL = 1  # deflate level: sheet XML is repetitive, level 1 keeps most of the gain at a fraction of the CPU

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_ESCAPE_LIKE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")
# A string that needs none of string_xml's work: no markup characters, nothing forbidden, no "_x".
_NOT_PLAIN = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]|_x")
_SPACE = " \t\n\r"
_MAX_INT_CELL = 999_999_999_999_999  # 15 digits
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def column_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, ..."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def cut(s: str) -> str:
    """At most MAX_CELL_TEXT UTF-16 units, never half a surrogate pair."""
    if len(s) <= MAX_CELL_TEXT // 2:
        return s
    if _ASTRAL.search(s) is None:
        return s[:MAX_CELL_TEXT]
    units = 0
    for i, ch in enumerate(s):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > MAX_CELL_TEXT:
            return s[:i]
    return s


def string_xml(s: str) -> str:
    """The inline-string content of a cell: ``<is><t>...</t></is>`` without the wrapper tags' attributes."""
    s = cut(xml.strip_forbidden(s))
    if "_x" in s:
        s = _ESCAPE_LIKE.sub(r"_x005F_\1", s)
    t = xml.text(s)
    if s and (s[0] in " \t\n\r" or s[-1] in " \t\n\r"):
        return f'<is><t xml:space="preserve">{t}</t></is>'
    return f"<is><t>{t}</t></is>"


def number_text(value: int | float) -> str | None:
    """The numeric cell text, or None when the number must be a string (over 15 digits, or not finite)."""
    if isinstance(value, int):
        return int.__repr__(value) if -999_999_999_999_999 <= value <= 999_999_999_999_999 else None
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) > 999_999_999_999_999:
        return None
    return float.__repr__(value)


def cell_xml(ref: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return f'<c r="{ref}" t="inlineStr">{string_xml(value)}</c>'
    if value is True:
        return f'<c r="{ref}" t="b"><v>1</v></c>'
    if value is False:
        return f'<c r="{ref}" t="b"><v>0</v></c>'
    if isinstance(value, (int, float)):
        text = number_text(value)
        if text is not None:
            return f'<c r="{ref}"><v>{text}</v></c>'
        return f'<c r="{ref}" t="inlineStr">{string_xml(xml.scalar(value))}</c>'
    return f'<c r="{ref}" t="inlineStr">{string_xml(xml.scalar(value))}</c>'


# -- a streamed ZIP -----------------------------------------------------------------------------------------------

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_FLAGS = 0x0808  # bit 3: sizes and CRC in a data descriptor; bit 11: UTF-8 names
_DEFLATE = 8


def _dos_time(t: float) -> tuple[int, int]:
    tm = time.gmtime(t)
    date = ((max(tm.tm_year, 1980) - 1980) << 9) | (tm.tm_mon << 5) | tm.tm_mday
    return date, (tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec // 2)


class StreamedZip:
    """Writes deflated entries one after another; each method returns the archive bytes it produced."""

    def __init__(self) -> None:
        self.offset = 0
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # name, crc, compressed, size, local offset
        self._date, self._time = _dos_time(time.time())
        self._name = b""
        self._crc = 0
        self._size = 0
        self._compressed = 0
        self._local = 0
        self._deflate: Any = None

    def _out(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data

    def open(self, name: str) -> bytes:
        self._name = name.encode()
        self._crc = self._size = self._compressed = 0
        self._local = self.offset
        self._deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        head = _LOCAL.pack(0x04034B50, 20, _FLAGS, _DEFLATE, self._time, self._date, 0, 0, 0, len(self._name), 0)
        return self._out(head + self._name)

    def write(self, data: bytes) -> bytes:
        self._crc = crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        self._compressed += len(out)
        return self._out(out)

    def close(self) -> bytes:
        out = self._deflate.flush()
        self._compressed += len(out)
        self._deflate = None
        if self._size >= _LIMIT32 or self._compressed >= _LIMIT32:
            descriptor = struct.pack("<IIQQ", 0x08074B50, self._crc, self._compressed, self._size)
        else:
            descriptor = struct.pack("<IIII", 0x08074B50, self._crc, self._compressed, self._size)
        self._entries.append((self._name, self._crc, self._compressed, self._size, self._local))
        return self._out(out + descriptor)

    def entry(self, name: str, data: bytes) -> bytes:
        return self.open(name) + self.write(data) + self.close()

    def finish(self) -> bytes:
        cd_offset = self.offset
        parts = []
        for name, crc, compressed, size, local in self._entries:
            big = size >= _LIMIT32 or compressed >= _LIMIT32
            far = local >= _LIMIT32
            fields = ([size, compressed] if big else []) + ([local] if far else [])
            extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
            parts.append(
                _CENTRAL.pack(
                    0x02014B50, 0x031E, 45 if fields else 20, _FLAGS, _DEFLATE, self._time, self._date, crc,
                    _LIMIT32 if big else compressed, _LIMIT32 if big else size, len(name), len(extra), 0, 0, 0,
                    0o100644 << 16, _LIMIT32 if far else local,
                )
                + name
                + extra
            )
        cd = b"".join(parts)
        count = len(self._entries)
        tail = b""
        if count >= _LIMIT16 or len(cd) >= _LIMIT32 or cd_offset >= _LIMIT32:
            end64 = cd_offset + len(cd)
            tail += _EOCD64.pack(0x06064B50, 44, 0x031E, 45, 0, 0, count, count, len(cd), cd_offset)
            tail += _LOCATOR64.pack(0x07064B50, 0, end64, 1)
        tail += _EOCD.pack(
            0x06054B50, 0, 0, min(count, _LIMIT16), min(count, _LIMIT16), min(len(cd), _LIMIT32),
            min(cd_offset, _LIMIT32), 0,
        )
        return self._out(cd + tail)


# -- the workbook ---------------------------------------------------------------------------------------------------

_STYLES = (
    f'{_XML_HEAD}<styleSheet xmlns="{_MAIN}"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>'
    '</fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)
_ROOT_RELS = (
    f'{_XML_HEAD}<Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
    f'Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_SHEET_HEAD = f'{_XML_HEAD}<worksheet xmlns="{_MAIN}"><sheetData>'
_SHEET_TAIL = "</sheetData></worksheet>"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def _workbook(sheets: int) -> str:
    listed = "".join(f'<sheet name="Sheet{i}" sheetId="{i}" r:id="rId{i}"/>' for i in range(1, sheets + 1))
    return f'{_XML_HEAD}<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets>{listed}</sheets></workbook>'


def _workbook_rels(sheets: int) -> str:
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, sheets + 1)
    )
    rels += f'<Relationship Id="rId{sheets + 1}" Type="{_REL}/styles" Target="styles.xml"/>'
    return f'{_XML_HEAD}<Relationships xmlns="{_PKG_REL}">{rels}</Relationships>'


def _content_types(sheets: int) -> str:
    overrides = f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
    overrides += f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/>'
    overrides += "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT}.worksheet+xml"/>'
        for i in range(1, sheets + 1)
    )
    return (
        f'{_XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>{overrides}</Types>'
    )


class XlsxRenderer(TabularRenderer):
    def __init__(self, q: ItemsQuery) -> None:
        super().__init__(q)
        self._bom = b""  # `bom` does not apply to a ZIP
        self._zip = StreamedZip()
        self._sheets = 0
        self._row = 0  # spreadsheet row number of the last row written in the current sheet
        self._letters: list[str] = []
        self._header = ""

    def header(self) -> bytes:
        self._letters = [column_letters(i) for i in range(len(self.columns))]
        self._header = "".join(
            f'<c r="{letter}1" t="inlineStr">{string_xml(name)}</c>'
            for letter, name in zip(self._letters, self.columns, strict=True)
        )
        return self._new_sheet()

    def _new_sheet(self) -> bytes:
        self._sheets += 1
        self._row = 1
        head = self._zip.open(f"xl/worksheets/sheet{self._sheets}.xml")
        return head + self._zip.write(f'{_SHEET_HEAD}<row r="1">{self._header}</row>'.encode())

    def _end_sheet(self) -> bytes:
        return self._zip.write(_SHEET_TAIL.encode()) + self._zip.close()

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        parts: list[str] = []
        named = list(zip(self._letters, self.columns, strict=True))
        plain_search = _NOT_PLAIN.search
        for row in rows:
            if self._row > SHEET_ROWS:
                out.append(self._zip.write("".join(parts).encode()))
                parts = []
                out.append(self._end_sheet())
                out.append(self._new_sheet())
            self._row += 1
            n = str(self._row)
            parts.append(f'<row r="{n}">')
            get = cells(row).get
            for letter, column in named:
                value = get(column)
                if value is None:
                    continue
                kind = type(value)
                # The two common cases inline (this loop is the format's whole cost); the rest via cell_xml.
                if (
                    kind is str
                    and value
                    and len(value) <= MAX_CELL_TEXT // 2
                    and plain_search(value) is None
                    and value[0] not in _SPACE
                    and value[-1] not in _SPACE
                ):
                    parts.append(f'<c r="{letter}{n}" t="inlineStr"><is><t>{value}</t></is></c>')
                elif kind is int and -_MAX_INT_CELL <= value <= _MAX_INT_CELL:
                    parts.append(f'<c r="{letter}{n}"><v>{value}</v></c>')
                else:
                    parts.append(cell_xml(letter + n, value))
            parts.append("</row>")
        out.append(self._zip.write("".join(parts).encode()))
        return b"".join(out)

    def end(self) -> bytes:
        z = self._zip
        n = self._sheets
        return (
            self._end_sheet()
            + z.entry("xl/workbook.xml", _workbook(n).encode())
            + z.entry("xl/_rels/workbook.xml.rels", _workbook_rels(n).encode())
            + z.entry("xl/styles.xml", _STYLES.encode())
            + z.entry("_rels/.rels", _ROOT_RELS.encode())
            + z.entry("[Content_Types].xml", _content_types(n).encode())
            + z.finish()
        )
