"""Cells of a row and the columns of the tabular formats (API-datasets.md sections 6.1 and 6.2).

A row becomes cells by a depth-first walk: a value inside an object gets the path ``parent/key``, inside an array
``parent/index``; only leaves (strings, numbers, booleans, null) make cells. The columns of an export are the
distinct cell paths in order of first appearance over the selected items in ascending order, grouped by field
when ``fields`` are in effect, at most 2000, names of at most 200 characters.

Two ways to get them, with the same answer:

- ``ColumnCollector``: fed the output rows themselves (a scan; needed when ``unwind`` changes how many rows an
  item makes and what keys they hold).
- ``columns(shape, paths)``: from an index kept at push time, so that a header needs no scan. ``item_paths``
  lists the paths of one stored item, ``merge_paths`` / ``block_paths`` merge them (ordered union) per block of
  items. A path is a list of segments: a string is an object key, an integer an array index (flatten recurses
  into objects only, so the two must be told apart), and a final ``None`` marks an empty object or array (it makes
  no cell, but its key can still replace another key, see below). The empty path ``[]`` means "too big to
  index": ``columns`` then answers None and the caller scans.

``columns`` also answers None when keys of a row could collide (a key made by ``flatten`` or ``outputFields``
equal to another key of the same row): the row keeps one value, so the other value's cells vanish, which the
merged index cannot see. It never guesses: when it answers, it equals what the scan gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from openkvs import errors

if TYPE_CHECKING:
    from openkvs.datasets.pipeline import Shape

MAX_COLUMNS = 2000  # Apify's documented limits: later columns are dropped, and so are longer names
MAX_COLUMN_NAME = 200

# The index of one item, or of a merged block, gives up (the overflow marker) past these: a path list larger than
# this can't be kept per block at push time without costing more than the items themselves; such blocks are scanned.
MAX_INDEX_PATHS = 20_000
MAX_INDEX_CHARS = 2_000_000

PathEntry = list[str | int | None]
OVERFLOW: PathEntry = []


# -- cells ------------------------------------------------------------------------------------------------------


def cells(row: dict[str, Any]) -> dict[str, Any]:
    """The cells of one output row: path -> leaf value (None for null), in walk order. Two leaves with one path
    (a key holding "/"): the later one's value, at the first one's position."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, (dict, list)):
            if value:
                _walk(key, value, out)
        else:
            out[key] = value
    return out


def _walk(prefix: str, value: dict[str, Any] | list[Any], out: dict[str, Any]) -> None:
    # An explicit stack rather than recursion: the walk is total whatever the nesting.
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


def _children(value: dict[str, Any] | list[Any]) -> Iterable[tuple[Any, Any]]:
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


# -- the index of paths ------------------------------------------------------------------------------------------


def _paths(item: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """The index entries of one item as tuples (hashable), in walk order."""
    stack: list[tuple[tuple[Any, ...], Iterable[tuple[Any, Any]]]] = [((), iter(item.items()))]
    while stack:
        prefix, children = stack[-1]
        for key, inner in children:
            if isinstance(inner, (dict, list)):
                if inner:
                    stack.append(((*prefix, key), _children(inner)))
                    break
                yield (*prefix, key, None)
            else:
                yield (*prefix, key)
        else:
            stack.pop()


def _cost(path: Iterable[Any]) -> int:
    return sum(len(s) + 1 if isinstance(s, str) else 2 for s in path)


class _Union:
    """An ordered union of index entries under the size limits; ``out`` turns into ``[OVERFLOW]`` past them."""

    def __init__(self, out: list[PathEntry]) -> None:
        self.out = out
        self.full = out == [OVERFLOW]
        self.seen = {tuple(p) for p in out}
        self.chars = sum(map(_cost, out))

    def add(self, path: tuple[Any, ...]) -> None:
        if path in self.seen or self.full:
            return
        if not path:
            self.overflow()
            return
        self.seen.add(path)
        self.out.append(list(path))
        self.chars += _cost(path)
        if len(self.out) > MAX_INDEX_PATHS or self.chars > MAX_INDEX_CHARS:
            self.overflow()

    def overflow(self) -> None:
        self.out[:] = [OVERFLOW]
        self.full = True
        self.seen = set()


def item_paths(item: Any) -> list[PathEntry]:
    """The cell paths of one raw stored item, in walk order, plus markers of empty objects and arrays; JSON-able.
    ``[OVERFLOW]`` when the item is too big to index."""
    if not isinstance(item, dict):
        return []
    union = _Union([])
    for path in _paths(item):
        union.add(path)
        if union.full:
            break
    return union.out


def merge_paths(into: list[PathEntry], new: Iterable[PathEntry]) -> None:
    """Append to ``into`` the entries of ``new`` it lacks, in order (an ordered union, so merging is associative:
    blocks can be merged in any grouping as long as their order is kept). Turns ``into`` into ``[OVERFLOW]``
    when either side is, or when the union grows past the index limits."""
    union = _Union(into)
    for path in new:
        union.add(tuple(path))
        if union.full:
            return


def merge_blocks(blocks: Iterable[list[PathEntry]]) -> list[PathEntry]:
    """The union of many blocks' indexes, in order: what ``merge_paths`` of each gives, with one seen-set (and a
    block equal to the one before, the usual case, costs one list comparison)."""
    merger = BlockMerger()
    merger.add(blocks)
    return merger.out


class BlockMerger:
    """``merge_blocks`` fed in several calls (blocks read a window at a time), its seen-set kept between them."""

    def __init__(self) -> None:
        self._union = _Union([])
        self._last: list[PathEntry] | None = None

    @property
    def out(self) -> list[PathEntry]:
        return self._union.out

    @property
    def full(self) -> bool:
        """Overflowed: ``out`` is ``[OVERFLOW]`` and further blocks change nothing."""
        return self._union.full

    def add(self, blocks: Iterable[list[PathEntry]]) -> None:
        union = self._union
        for block in blocks:
            if union.full:
                break
            if block == self._last:
                continue
            self._last = block
            for path in block:
                union.add(tuple(path))


def _add_nested(union: _Union, prefix: tuple[Any, ...], value: dict[str, Any] | list[Any]) -> None:
    # Recursive: one call per container, not per leaf. Depth is bounded by what json.loads could build.
    seen, add = union.seen, union.add
    for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(inner, (dict, list)):
            if inner:
                _add_nested(union, (*prefix, key), inner)
            else:
                add((*prefix, key, None))
        else:
            path = (*prefix, key)
            if path not in seen:
                add(path)
        if union.full:
            return


def block_paths(items: Iterable[Any], into: list[PathEntry] | None = None) -> list[PathEntry]:
    """The merged index of many items (e.g. one block of 1,000), in one pass: ``merge_paths`` of each
    ``item_paths`` without rebuilding the seen-set per item."""
    union = _Union([] if into is None else into)
    seen = union.seen
    for item in items:
        if not isinstance(item, dict):
            continue
        # Top-level leaves, most of an item, checked without the walk's machinery; the rest walked. One item
        # past the limits overflows the union too (its paths are distinct): no separate check.
        for key, value in item.items():
            if isinstance(value, (dict, list)):
                if value:
                    _add_nested(union, (key,), value)
                else:
                    union.add((key, None))
            elif (key,) not in seen:
                union.add((key,))
            if union.full:
                return union.out
        seen = union.seen
    return union.out


def columns(shape: Shape, paths: Iterable[PathEntry]) -> list[str] | None:
    """Section 6.2's header from a merged index (the blocks of the selection in ascending order), or None when the
    index can't tell: the shape unwinds, an index overflowed, or keys may collide (module docstring). Raises the
    400 ``no-columns-in-exported-dataset`` when there are no columns."""
    if shape.unwind:
        return None
    flatten = frozenset(shape.flatten)
    pick = dict(shape.pick) if shape.pick is not None else None
    omit = frozenset(shape.omit)
    collector = ColumnCollector(shape)
    top_keys: set[str] = set()  # raw top-level keys
    made: set[str] = set()  # keys that flatten makes
    origin_of: dict[str, tuple[Any, ...]] = {}  # final key -> the raw key (or flattened key run) it comes from
    for path in paths:
        if not path or not isinstance(path[0], str):
            return None
        top = path[0]
        top_keys.add(top)
        end = 1
        if top in flatten:
            while end < len(path) and isinstance(path[end], str):
                end += 1
        origin = tuple(path[:end])
        key = ".".join(origin)  # type: ignore[arg-type]  # the first `end` segments are strings
        if end > 1:
            made.add(key)
        if pick is not None:
            if key not in pick:
                continue
            key = pick[key]
        if key in omit or (shape.skip_hidden and key.startswith("#")):
            continue
        if origin_of.setdefault(key, origin) != origin:
            return None
        if path[-1] is None:
            continue
        collector.add_cell(key, key + "".join(f"/{s}" for s in path[end:]))
    if made & top_keys:
        return None
    return collector.columns()


# -- columns from rows -------------------------------------------------------------------------------------------


class ColumnCollector:
    """Columns from the output rows of a shape, fed in ascending item order (``add``), then ``columns()``.
    Memory stays bounded: each field group keeps at most MAX_COLUMNS names of at most MAX_COLUMN_NAME characters."""

    def __init__(self, shape: Shape) -> None:
        self._shape = shape
        fields = shape.group_fields
        self._fields = fields or ()
        self._group_of: dict[str, int] = {}
        for i, name in enumerate(self._fields):
            self._group_of.setdefault(name, i)
        # Keys outside the fields can only come from unwinding (simplified: fields first, then unwind): they join
        # the group of the field they were unwound from, else a trailing group.
        self._other = len(self._fields)
        if fields:
            for name in shape.unwind:
                if name in self._group_of:
                    self._other = self._group_of[name]
                    break
        self._groups: list[dict[str, None]] = [{} for _ in range(len(self._fields) + 1)]
        self.visited = 0  # cells walked so far: the work of a scan, which a caller may bound

    def add_items(self, items: Iterable[Any]) -> None:
        """The stored items themselves: their rows as ``Shape.header_rows`` gives them (rows that skipFailedPages
        drops still count, section 6.2)."""
        header_rows = self._shape.header_rows
        for item in items:
            self.add(header_rows(item))

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Output rows, in order."""
        for row in rows:
            self.add_row(row)

    def add_row(self, row: dict[str, Any]) -> None:
        """One output row; ``visited`` grows by the cells it walked (top-level keys and nested leaves)."""
        self.visited += len(row)
        for key, value in row.items():
            group = self._groups[self._group_of.get(key, self._other)]
            if isinstance(value, (dict, list)):
                if value:
                    names = cells({key: value})
                    self.visited += len(names)
                    for name in names:
                        self._add(group, name)
            elif key not in group:
                self._add(group, key)

    def add_cell(self, key: str, name: str) -> None:
        """One cell path ``name`` under the row's top-level key ``key``."""
        self._add(self._groups[self._group_of.get(key, self._other)], name)

    @staticmethod
    def _add(group: dict[str, None], name: str) -> None:
        if name not in group and len(group) < MAX_COLUMNS and len(name) <= MAX_COLUMN_NAME:
            group[name] = None

    def columns(self) -> list[str]:
        out: dict[str, None] = {}
        for i, group in enumerate(self._groups):
            if group:
                for name in group:
                    out.setdefault(name)
            elif i < len(self._fields) and len(self._fields[i]) <= MAX_COLUMN_NAME:
                out.setdefault(self._fields[i])  # a listed field with no value anywhere: one empty column
        if not out:
            raise errors.NoColumnsInExportedDataset()
        return list(out)[:MAX_COLUMNS]
