"""The query parameters of ``GET /v2/datasets/{id}/items`` (API-datasets.md sections 1, 4.5 and 5), parsed and
checked in one place: a bad value is a 400 before anything is read or sent.

Conventions: names are case-sensitive; a parameter given with an empty value counts as absent (so it neither
overrides a view nor fails); booleans are ``true``/``false``/``1``/``0`` exactly (``rules.QUERY_BOOLEANS``, as on
every endpoint; ``format`` alone is case-insensitive); integers are decimal digits
only, at most 2**53 - 1; lists are comma-separated, names taken verbatim, empty entries ignored. With ``view``,
the view's ``transformation`` supplies defaults for ``fields, unwind, flatten, omit, limit, desc, clean,
skipHidden, skipEmpty``; the query wins for each parameter it gives. ``simplified`` yields to ``fields`` and
``unwind`` in effect (from the query or the view).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openkvs import errors, rules
from openkvs.datasets.pipeline import SIMPLIFIED_UNWIND, Shape

FORMATS = ("json", "jsonl", "csv", "html", "xlsx", "xml", "rss")
MAX_INT = rules.MAX_QUERY_INT
_DIGITS = re.compile(r"[0-9]+\Z")
# The parameters a view's transformation may set, as the query names them.
_VIEW_KEYS = ("fields", "unwind", "flatten", "omit", "limit", "desc", "clean", "skipHidden", "skipEmpty")


@dataclass(frozen=True)
class FormatOptions:
    name: str = "json"
    bom: bool = False
    delimiter: str = ","
    skip_header_row: bool = False
    xml_root: str = "items"
    xml_row: str = "item"
    feed_title: str | None = None
    feed_description: str | None = None
    attachment: bool = False


@dataclass(frozen=True)
class ItemsQuery:
    offset: int = 0
    limit: int | None = None  # None: no limit (header X-Apify-Pagination-Limit: 999999999999)
    desc: bool = False
    shape: Shape = Shape()
    format: FormatOptions = FormatOptions()

    @property
    def raw_json(self) -> bool:
        """The export can copy stored item bytes as they are (``Renderer.raw_json``): json or jsonl, rows == items."""
        return self.shape.identity and self.format.name in ("json", "jsonl")


def _short(value: str) -> str:
    return value if len(value) <= 100 else value[:100] + "..."


def parse_bool(name: str, raw: str) -> bool:
    value = rules.QUERY_BOOLEANS.get(raw)
    if value is None:
        raise errors.InvalidInput(f"Parameter '{name}' must be a boolean (true, false, 1 or 0), not '{_short(raw)}'.")
    return value


def parse_int(name: str, raw: str) -> int:
    if not _DIGITS.match(raw) or len(raw) > 40 or int(raw) > MAX_INT:
        raise errors.InvalidInput(f"Parameter '{name}' must be a non-negative integer of at most {MAX_INT}.")
    return int(raw)


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.split(",") if part)


def _view_value(key: str, value: Any) -> Any:
    """A view's transformation value in the query's terms; None when it has no usable value."""
    if key in ("fields", "unwind", "flatten", "omit"):
        if isinstance(value, str):
            return parse_list(value)
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, str) and v)
        return None
    if key == "limit":
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT else None
    return value if isinstance(value, bool) else None


def _view(name: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise errors.DatasetDoesNotHaveSchema()
    views = schema.get("views")
    view = views.get(name) if isinstance(views, Mapping) else None
    if not isinstance(view, Mapping):
        raise errors.RequestedDatasetViewDoesNotExist(name)
    transformation = view.get("transformation")
    if not isinstance(transformation, Mapping):
        return {}
    out = {}
    for key in _VIEW_KEYS:
        if key in transformation:
            value = _view_value(key, transformation[key])
            if value is not None:
                out[key] = value
    return out


def parse_items_query(query: Mapping[str, str], schema: Mapping[str, Any] | None) -> ItemsQuery:
    """Every parameter of section 4.5; raises an ``errors.ApiError`` (400) for a bad value or an unknown view."""

    def raw(name: str) -> str | None:
        value = query.get(name)
        return value if value else None

    fmt_raw = raw("format")
    fmt = fmt_raw.lower() if fmt_raw else "json"
    if fmt not in FORMATS:
        raise errors.InvalidInput(
            f"Parameter 'format' must be one of {', '.join(FORMATS)}, not '{_short(fmt_raw or '')}'."
        )

    view_name = raw("view")
    view = _view(view_name, schema) if view_name is not None else {}

    def flag(name: str, default: bool = False) -> bool:
        value = raw(name)
        if value is not None:
            return parse_bool(name, value)
        return bool(view.get(name, default))

    def names(name: str) -> tuple[str, ...] | None:
        value = raw(name)
        if value is not None:
            return parse_list(value)
        listed = view.get(name)
        return tuple(listed) if listed is not None else None

    offset_raw = raw("offset")
    offset = parse_int("offset", offset_raw) if offset_raw is not None else 0
    limit_raw = raw("limit")
    limit = parse_int("limit", limit_raw) if limit_raw is not None else view.get("limit")
    desc = flag("desc")

    fields = names("fields") or None  # an empty list is no fields step
    unwind = names("unwind") or ()
    output_raw = raw("outputFields")
    output_fields = parse_list(output_raw) if output_raw is not None else None
    if output_fields is not None:
        if fields is None:
            raise errors.InvalidInput("Parameter 'outputFields' needs 'fields'.")
        if len(output_fields) != len(fields):
            raise errors.InvalidInput(
                f"Parameter 'outputFields' must name as many fields as 'fields' ({len(fields)}), "
                f"not {len(output_fields)}."
            )
    simplified = flag("simplified")
    if simplified and not unwind:
        unwind = (SIMPLIFIED_UNWIND,)
    clean = flag("clean")
    shape = Shape(
        skip_failed_pages=flag("skipFailedPages"),
        simplified=simplified and fields is None,
        unwind=unwind,
        flatten=names("flatten") or (),
        fields=fields,
        output_fields=output_fields,
        omit=names("omit") or (),
        skip_hidden=flag("skipHidden") or clean,
        skip_empty=flag("skipEmpty") or clean,
    )

    delimiter = query.get("delimiter") or ","
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise errors.InvalidInput("Parameter 'delimiter' must be exactly one character other than '\"', CR and LF.")
    xml_root = raw("xmlRoot") or "items"
    xml_row = raw("xmlRow") or "item"
    for param, value in (("xmlRoot", xml_root), ("xmlRow", xml_row)):
        if not rules.XML_NAME.ok(value):
            raise errors.InvalidInput(f"Parameter '{param}' must match {rules.XML_NAME.pattern}.")
    bom_raw = raw("bom")
    options = FormatOptions(
        name=fmt,
        bom=parse_bool("bom", bom_raw) if bom_raw is not None else fmt == "csv",
        delimiter=delimiter,
        skip_header_row=flag("skipHeaderRow"),
        xml_root=xml_root,
        xml_row=xml_row,
        feed_title=raw("feedTitle"),
        feed_description=raw("feedDescription"),
        attachment=flag("attachment"),
    )
    return ItemsQuery(offset=offset, limit=limit or None, desc=desc, shape=shape, format=options)
