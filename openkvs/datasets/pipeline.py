"""From one stored item to its output rows: the transformation steps 2-9 of API-datasets.md section 5.

Every format goes through ``Shape.rows``. Items are JSON objects as stored; ``rows`` never mutates them and never
raises, whatever JSON value it is given (a value that is not an object gives no row: pushes never store one), but
for the 400 of a row that ``flatten`` would make too large (MAX_FLATTENED_KEYS).
Key order is Python dict order, which is the stored order; where a step makes a key that already exists (unwind's
spread, flatten, a rename), the key keeps its first position and takes the later value, as a JavaScript object
spread does.

The column index and the field statistics live in their own modules and are re-exported here, so that the caller
finds the whole "items to rows" vocabulary in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from openkvs import errors
from openkvs.datasets.columns import (
    MAX_COLUMN_NAME,
    MAX_COLUMNS,
    BlockMerger,
    ColumnCollector,
    PathEntry,
    block_paths,
    cells,
    columns,
    item_paths,
    merge_blocks,
    merge_paths,
)
from openkvs.datasets.stats import FieldStats, field_statistics

__all__ = [
    "SIMPLIFIED_FIELDS",
    "Shape",
    "PathEntry",
    "item_paths",
    "merge_paths",
    "merge_blocks",
    "block_paths",
    "columns",
    "cells",
    "ColumnCollector",
    "MAX_COLUMNS",
    "MAX_COLUMN_NAME",
    "BlockMerger",
    "FieldStats",
    "field_statistics",
]

# The legacy `simplified` view (section 5 step 3): these fields, then one row per page-function result.
SIMPLIFIED_FIELDS = ("url", "pageFunctionResult", "errorInfo")
SIMPLIFIED_UNWIND = "pageFunctionResult"


@dataclass(frozen=True)
class Shape:
    """What section 5 does to each selected item, steps 2-9. Lists are as the query gives them, empty entries
    already removed; ``fields`` None means no fields step. ``output_fields``, if set, has one name per entry of
    ``fields`` (the query parser checks it)."""

    skip_failed_pages: bool = False
    simplified: bool = False  # step 3 runs (the parser turns it off when explicit `fields` are in effect)
    unwind: tuple[str, ...] = ()
    flatten: tuple[str, ...] = ()
    fields: tuple[str, ...] | None = None
    output_fields: tuple[str, ...] | None = None
    omit: tuple[str, ...] = ()
    skip_hidden: bool = False
    skip_empty: bool = False

    # Derived once, for the per-item hot path.
    identity: bool = field(init=False, repr=False, compare=False)
    _pick: tuple[tuple[str, str], ...] | None = field(init=False, repr=False, compare=False)
    _flatten: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _omit: frozenset[str] = field(init=False, repr=False, compare=False)
    _header_shape: Shape = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.output_fields is not None and (self.fields is None or len(self.output_fields) != len(self.fields)):
            raise ValueError("output_fields needs fields, one name each")
        pick: tuple[tuple[str, str], ...] | None = None
        if self.fields is not None:
            names = self.output_fields or self.fields
            seen: dict[str, str] = {}
            for name, out in zip(self.fields, names, strict=True):
                seen.setdefault(name, out)  # a repeated field counts once, with its first output name
            pick = tuple(seen.items())
        identity = not (
            self.skip_failed_pages
            or self.simplified
            or self.unwind
            or self.flatten
            or self.fields is not None
            or self.omit
            or self.skip_hidden
            or self.skip_empty
        )
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "_pick", pick)
        object.__setattr__(self, "_flatten", tuple(dict.fromkeys(self.flatten)))
        object.__setattr__(self, "_omit", frozenset(self.omit))
        header = replace(self, skip_failed_pages=False) if self.skip_failed_pages else self
        object.__setattr__(self, "_header_shape", header)

    @property
    def group_fields(self) -> tuple[str, ...] | None:
        """The output names that group tabular columns (section 6.2), or None when no fields are in effect:
        ``fields`` after ``outputFields``, or the legacy simplified fields."""
        if self._pick is not None:
            return tuple(dict.fromkeys(out for _, out in self._pick))
        if self.simplified:
            return SIMPLIFIED_FIELDS
        return None

    @property
    def pick(self) -> tuple[tuple[str, str], ...] | None:
        """(stored name, output name) pairs of the fields step, repeated names removed; None without fields."""
        return self._pick

    def rows(self, item: Any) -> list[dict[str, Any]]:
        """The output rows of one stored item, in order (unwound rows in array order, whatever ``desc`` says)."""
        return list(self.iter_rows(item))

    def iter_rows(self, item: Any) -> Iterator[dict[str, Any]]:
        """``rows``, one at a time: unwinding several fields multiplies (``unwind=a,b`` of two arrays of 3,000
        elements, a 30 kB item, is 9 million rows), so a caller takes them in pieces of bounded size."""
        for r in self.rows_and_drops(item):
            if r is not None:
                yield r

    def rows_and_drops(self, item: Any) -> Iterator[dict[str, Any] | None]:
        """``iter_rows``, and None for each row that skipEmpty drops: a caller that bounds the work of a piece
        counts those too (unwinding may make millions of rows that all turn out empty)."""
        if not isinstance(item, dict):
            return
        if self.skip_failed_pages and failed(item.get("errorInfo")):
            return
        if self.identity:
            yield item
            return
        row = item
        if self.simplified:
            row = {k: item[k] for k in SIMPLIFIED_FIELDS if k in item}
        for r in _unwind_all(row, self.unwind) if self.unwind else (row,):
            r = self.select(r)
            yield r if r or not self.skip_empty else None

    def header_rows(self, item: Any) -> Iterator[dict[str, Any]]:
        """The rows whose cells make the tabular header: ``rows`` without skipFailedPages (section 6.2's
        decision, which lets the header come from an index of paths kept at push time)."""
        return self._header_shape.iter_rows(item)  # (the shape itself without skipFailedPages)

    def header_rows_and_drops(self, item: Any) -> Iterator[dict[str, Any] | None]:
        """``header_rows`` and None for each row that skipEmpty drops (see ``rows_and_drops``)."""
        return self._header_shape.rows_and_drops(item)

    def select(self, row: dict[str, Any]) -> dict[str, Any]:
        """Steps 5-8 on one row: flatten, fields and outputFields, omit, skipHidden."""
        if self._flatten:
            row = _flatten(row, self._flatten)
        if self._pick is not None:
            picked: dict[str, Any] = {}
            for name, out in self._pick:
                if name in row:
                    picked[out] = row[name]
            row = picked
        if self._omit:
            row = {k: v for k, v in row.items() if k not in self._omit}
        if self.skip_hidden:
            row = {k: v for k, v in row.items() if not k.startswith("#")}
        return row


def failed(error_info: Any) -> bool:
    """skipFailedPages: is ``errorInfo`` present and truthy in JavaScript's sense (not null, false, 0 or "")?
    Empty arrays and objects are truthy there, so they count as failures too."""
    if error_info is None or error_info is False or error_info == "":
        return False
    if isinstance(error_info, (int, float)) and not isinstance(error_info, bool):
        return bool(error_info == error_info and error_info != 0)  # NaN is falsy in JavaScript
    return True


def _unwind_all(row: dict[str, Any], names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The rows of unwinding ``names`` in order, depth first, without recursion (a query may list thousands)."""
    stack: list[tuple[int, Iterator[dict[str, Any]]]] = [(0, iter((row,)))]
    while stack:
        level, rows = stack[-1]
        r = next(rows, None)
        if r is None:
            stack.pop()
        elif level == len(names):
            yield r
        else:
            stack.append((level + 1, _unwind(r, names[level])))


def _unwind(row: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    value = row.get(name)
    if isinstance(value, list) and value:
        rest = None
        for element in value:
            if isinstance(element, dict):
                if rest is None:
                    rest = {k: v for k, v in row.items() if k != name}
                yield {**rest, **element}
            else:
                yield {**row, name: element}
    elif isinstance(value, dict) and value:
        rest = {k: v for k, v in row.items() if k != name}
        yield {**rest, **value}
    else:
        yield row


# Decision (the contract is silent): the keys ``flatten`` makes for one row, at most this many characters together.
# Each leaf's key repeats its whole path, so a stored item of 5 MB nested 120 levels over 500,000 leaves made a row
# of 120 MiB of keys and grew the server by 369 MiB; rows within this take at most ~4x it in memory while rendered.
MAX_FLATTENED_KEYS = 16 * 1024 * 1024


def _flatten(row: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """One pass per listed name, in order (a later name may be a key an earlier pass wrote). Raises InvalidInput
    past MAX_FLATTENED_KEYS."""
    left = MAX_FLATTENED_KEYS
    for name in names:
        value = row.get(name)
        if isinstance(value, dict) and value:
            out: dict[str, Any] = {}
            for key, inner in row.items():
                if key == name:
                    left = _flatten_into(out, key, value, left)
                else:
                    out[key] = inner
            row = out
    return row


def _flatten_into(out: dict[str, Any], prefix: str, value: dict[str, Any], left: int) -> int:
    """``value``'s leaves into ``out`` under dotted keys; what is left of the keys' budget."""
    for key, inner in value.items():
        name = f"{prefix}.{key}"
        if isinstance(inner, dict) and inner:
            left = _flatten_into(out, name, inner, left)
        else:
            left -= len(name)
            if left < 0:
                raise errors.InvalidInput(
                    f"'flatten' makes the keys of one row longer than {MAX_FLATTENED_KEYS:,} characters together "
                    "(an item's nested objects are that deep and wide): export such items without 'flatten'."
                )
            out[name] = inner
    return left
