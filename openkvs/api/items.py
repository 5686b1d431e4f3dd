"""A dataset's items on their way in and out, without HTTP: a push body checked and encoded for storage
(API-datasets.md 4.4), and for an export (sections 5-7, api/export.py) which index range a query selects, the
columns of a tabular format (from the path index kept at push time where it can tell, else by a scan) and the body
as a stream of rendered batches."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from itertools import accumulate, chain
from operator import add, itemgetter
from typing import Any, TypeVar

import anyio.to_thread
import orjson

from openkvs import dataset_schema, errors, jsontext
from openkvs.api.download import SEND_PIECE, readahead
from openkvs.datasets import itemjson, pipeline
from openkvs.storage.datasets import BLOCK, ItemSnapshot, Push, selection_blocks

try:  # C, built by hatch_build.py where a compiler is: a push's stored items straight from its body
    from openkvs.datasets import _cpush
except ImportError:  # no compiler at install: every push is parsed in Python
    _cpush = None  # type: ignore[assignment]

# -- push --------------------------------------------------------------------------------------------------------

ITEM_MAX_DEPTH = 128  # levels of nesting a pushed body may have (contract section 1)


def skeleton(value: Any) -> Any:
    """What an item's cell paths depend on: its keys, nesting, array lengths and empty containers, without the
    scalar values (hashable). Items with the same skeleton have the same paths, so a push walks an item's paths
    once per skeleton, not once per item: scraped items mostly share a handful of shapes (2.7 us an item here,
    against 48 us for the paths themselves)."""
    t = type(value)
    if t is dict:
        return tuple([(k, skeleton(v)) for k, v in value.items()]) if value else "{}"
    if t is list:
        return ("[", *[skeleton(v) for v in value]) if value else "[]"
    return None


def _shape(value: Any, room: int, floats: list[float]) -> Any:
    """For the fast path of a push: a skeleton of the container ``value`` (not ``skeleton``'s form, but as
    telling: equal for two values exactly when their skeletons are), in one walk that also raises _Deep when
    ``value`` nests more than ``room`` levels and collects the floats it holds into ``floats`` (itemjson checks
    them). Only containers recurse, and a container of scalars alone is told by C-level scans.

    An object is the tuple of its members, each its key, or (key, shape) for a container; an array of scalars is
    (-1, length), one with containers (-2, each element's shape or None); "{}" and "[]" the empty ones. (An
    array's form starts with a number, which no key is: an array and an object never have equal forms.)"""
    if not room:
        raise _Deep
    if type(value) is dict:
        if not value:
            return "{}"
        values = value.values()
        types = set(map(type, values))
        if float in types:
            floats += [v for v in values if type(v) is float]
        if dict not in types and list not in types:
            return tuple(value)
        out: list[Any] = list(value)
        i = 0
        for v in values:
            t = type(v)
            if t is dict or t is list:
                out[i] = (out[i], _shape(v, room - 1, floats))
            i += 1
        return tuple(out)
    if not value:
        return "[]"
    types = set(map(type, value))
    if float in types:
        floats += [v for v in value if type(v) is float]
    if dict not in types and list not in types:
        return (-1, len(value))
    return (-2, *[_shape(v, room - 1, floats) if type(v) is dict or type(v) is list else None for v in value])


class _Deep(Exception):
    pass


# -- the walk of a whole push, column by column --------------------------------------------------------------------
#
# Scraped items mostly share one shape, so a push's items are walked as columns: the values of one key across all
# the objects with the same keys, the elements at one position across arrays of one length. What each column needs
# (its types, its floats, its keys) is then found by C-level passes over it (``map``, ``set``, ``itemgetter``), and
# the Python code runs once per column instead of once per container: 3.5x less CPU than ``_shape`` per item on
# bench/datasets.py's items, and a few objects per column for the garbage collector instead of several per item.
# Where the values of a column differ too much for that (many key sets, arrays of containers of many lengths, a mix
# of objects and arrays), its values are walked one by one by ``_shape``.

_CONTAINERS = frozenset((dict, list))


def shape_labels(col: list[Any], room: int, floats: list[float]) -> list[Any] | None:
    """What ``_shape`` finds of each value of ``col``, walked as a column: None when every value has the same
    skeleton, else a label per value, equal for two values exactly when their skeletons are (labels are only
    comparable within one call). Collects the floats and raises _Deep as ``_shape`` of each value would."""
    types = set(map(type, col))
    if float in types:
        floats += col if len(types) == 1 else [v for v in col if type(v) is float]
    if types.isdisjoint(_CONTAINERS):
        return None
    if not room:
        raise _Deep
    if len(col) > 2 and len(types) == 1:
        return _object_labels(col, room, floats) if dict in types else _array_labels(col, room, floats)
    return [_shape(v, room, floats) if type(v) is dict or type(v) is list else None for v in col]


def _object_labels(col: list[dict[str, Any]], room: int, floats: list[float]) -> list[Any] | None:
    """``shape_labels`` of objects: grouped by their keys (in order), each group's columns walked."""
    key_sets = set(map(tuple, col))
    if len(key_sets) == 1:
        return _columns_labels(col, key_sets.pop(), room, floats)
    if len(key_sets) * 4 > len(col):  # (groups of a few objects: columns would cost more than they save)
        return [_shape(v, room, floats) for v in col]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, value in enumerate(col):
        groups.setdefault(tuple(value), []).append(i)
    labels: list[Any] = [None] * len(col)
    for g, (keys, at) in enumerate(groups.items()):
        inner = _columns_labels([col[i] for i in at], keys, room, floats)
        if inner is None:
            for i in at:
                labels[i] = g
        else:
            for i, label in zip(at, inner, strict=True):
                labels[i] = (g, label)
    return labels


def _array_labels(col: list[list[Any]], room: int, floats: list[float]) -> list[Any] | None:
    """``shape_labels`` of arrays: of scalars, told apart by their lengths; of containers, walked by position
    when all have one length, else one by one."""
    lengths = set(map(len, col))
    elements = list(chain.from_iterable(col))
    types = set(map(type, elements))
    if types.isdisjoint(_CONTAINERS):
        if float in types:
            floats += elements if len(types) == 1 else [v for v in elements if type(v) is float]
        return None if len(lengths) == 1 else list(map(len, col))
    if len(lengths) == 1:
        return _columns_labels(col, range(lengths.pop()), room, floats)
    return [_shape(v, room, floats) for v in col]


def _columns_labels(col: list[Any], keys: Iterable[Any], room: int, floats: list[float]) -> list[Any] | None:
    """``shape_labels`` of containers with the same ``keys`` (object keys or array positions): the labels of
    each column under them, together."""
    inner = []
    for key in keys:
        labels = shape_labels(list(map(itemgetter(key), col)), room - 1, floats)
        if labels is not None:
            inner.append(labels)
    if not inner:
        return None
    return inner[0] if len(inner) == 1 else list(zip(*inner, strict=True))


def prepare_push_body(raw: bytes, fields_schema: dict[str, Any] | None) -> Push:
    """``prepare_push`` of a push's body bytes, parsed here (contract section 1: UTF-8, finite numbers, at most
    ITEM_MAX_DEPTH levels). Without a fields schema, by _cpush.c where it is built and sure of its answer (the
    same Push); else fast (orjson, itemjson.py) where that gives the same items and stored bytes as the json module,
    else as ``prepare_push``. CPU-bound: in a worker thread."""
    if not raw.strip():
        return prepare_push(None, fields_schema)
    if fields_schema is None and _cpush is not None:
        split = _cpush.split(raw)
        if split is not None:
            return _prepare_split(*split)
    try:
        value = itemjson.fast_loads(raw)
    except itemjson.NotFast:
        pass
    else:
        items, room = _elements(value)
        floats: list[float] = []
        try:  # the depth of every element first (as a parse that checks it would), then what each element is
            labels = shape_labels(items, room, floats)
        except _Deep:
            raise errors.InvalidInput(f"JSON nested more than {ITEM_MAX_DEPTH} levels deep.") from None
        if itemjson.floats_as_parsed(floats):
            return _prepare(items, items is value, labels, fields_schema, fast=True)
    try:
        value = jsontext.loads(raw, max_depth=ITEM_MAX_DEPTH)
    except jsontext.InvalidJson as exc:
        raise errors.InvalidInput(str(exc)) from None
    return prepare_push(value, fields_schema)


def prepare_push(value: Any, fields_schema: dict[str, Any] | None) -> Push:
    """The items of a parsed push body, checked, validated against the dataset's ``fields`` schema and encoded
    compact, with what storage keeps next to them. CPU-bound: in a worker thread."""
    items, _ = _elements(value)
    return _prepare(items, items is value, list(map(skeleton, items)), fields_schema, fast=False)


def _elements(value: Any) -> tuple[list[Any], int]:
    """The items of a body and the levels of nesting each may have."""
    if isinstance(value, dict):
        return [value], ITEM_MAX_DEPTH
    if isinstance(value, list):
        return value, ITEM_MAX_DEPTH - 1
    raise errors.InvalidInput("The request body must be a JSON object or an array of JSON objects.")


def _prepare(items: list[Any], array: bool, shapes: list[Any] | None, fields_schema: Any, *, fast: bool) -> Push:
    """The rest of a push, after the parse: ``shapes`` tell items whose paths, keys and clean count are the same
    (None: all items; ``fast``: the items came from orjson and hold only floats itemjson.floats_as_parsed
    passed)."""
    if array and not set(map(type, items)) <= {dict}:  # (a C-level pass first: the loop finds which, if any)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise errors.InvalidInput(f"Item at index {i} is not a JSON object.")
    if fields_schema is not None and items:
        invalid = dataset_schema.check_items(fields_schema, items)
        if invalid:
            raise errors.ItemsInvalid(invalid)
    try:
        encoded = itemjson.encode(items, fast=fast)
    except itemjson.LoneSurrogate as exc:
        raise errors.InvalidInput(str(exc)) from None
    # What the paths, the keys and the clean count need of an item depends on its skeleton only: once per skeleton.
    if shapes is None:  # (one skeleton: one list of paths shared by all, see below)
        if not items:
            return Push(encoded, 0, [], [], push_field_stats(fields_schema, items))
        first = items[0]
        clean = len(items) if any(not k.startswith("#") for k in first) else 0
        paths = [pipeline.item_paths(first)] * len(items)
        return Push(encoded, clean, list(first), paths, push_field_stats(fields_schema, items))
    by_skeleton: dict[Any, tuple[list[Any], bool]] = {}
    paths = []
    keys: dict[str, None] = {}
    clean = 0
    for item, shape in zip(items, shapes, strict=True):
        known = by_skeleton.get(shape)
        if known is None:
            keys.update(dict.fromkeys(item))
            known = by_skeleton[shape] = (pipeline.item_paths(item), any(not k.startswith("#") for k in item))
        paths.append(known[0])  # the same list object for items of one skeleton (merge_block skips repeats)
        clean += known[1]
    return Push(encoded, clean, list(keys), paths, push_field_stats(fields_schema, items))


def _prepare_split(encoded: list[bytes], kinds: list[int], firsts: list[int], clean: int) -> Push:
    """The Push of a body that _cpush.c split into stored items, each with its skeleton's number (``kinds``) and
    the index of each skeleton's first item (``firsts``): as ``_prepare``, the paths and the keys once per
    skeleton, from its first item parsed back. (No fields schema, so no field statistics: None.)"""
    keys: dict[str, None] = {}
    by_kind = []
    with jsontext.collector_paused():  # (an item of millions of containers: see there)
        for i in firsts:
            item = itemjson.load(encoded[i])
            keys.update(dict.fromkeys(item))
            by_kind.append(pipeline.item_paths(item))  # (one list object per skeleton, as _prepare's)
    return Push(encoded, clean, list(keys), list(map(by_kind.__getitem__, kinds)), None)


def push_field_stats(fields_schema: Any, items: list[Any]) -> dict[str, Any] | None:
    """The field statistics (contract 4.6) of a push's items, for storage to add to the dataset's: None when the
    ``fields`` schema names no properties (the statistics endpoint answers null then)."""
    stats = pipeline.FieldStats({"fields": fields_schema})
    if not stats.properties:
        return None
    stats.add_all(items)
    return stats.result()


def merge_block(old: list[Any], pieces: Any) -> list[Any]:
    """storage.datasets.MergePaths: the block's path list with the items' path lists merged in, in order (a list
    already merged in this call adds nothing: items of one skeleton share theirs, see prepare_push)."""
    done: set[int] = set()
    unique = []
    for paths in pieces:
        if id(paths) not in done:
            done.add(id(paths))
            unique.append(paths)
    return pipeline.merge_blocks([old, *unique])


# -- export ------------------------------------------------------------------------------------------------------

# Items per batch of an export's body (storage also stops a batch at BATCH_BYTES): fewer, larger reads of small
# items (PostgreSQL: 40 MB/s in batches of 1,000, 80 in batches of 5,000), each rendered in one trip to a thread.
EXPORT_BATCH = 4000
# Unchanged items of a json or jsonl export come joined by storage in pieces of about this many bytes: each goes
# to the server's send as it is (the response cuts anything longer into SEND_PIECE views, without copies), and
# the next piece is read while this one is sent.
RAW_PIECE = SEND_PIECE - 64


def select(total: int, offset: int, limit: int | None, desc: bool) -> tuple[int, int, int]:
    """(lo, hi, count): the index range the query selects from ``total`` items and how many that is."""
    avail = max(0, total - offset)
    count = min(limit, avail) if limit else avail
    if desc:
        return total - offset - count, total - offset, count
    return offset, offset + count, count


# A tabular export with unwind learns its header by a scan of the selection's rows before its first byte (contract
# section 7): its cost grows with the rows unwinding makes, which one small item can multiply into millions. The
# scan visits at most this many cells (a row's top-level keys and the leaves under them; a few seconds to a minute
# of CPU); past that the export is refused with a 400 that says what to do instead.
MAX_HEADER_SCAN_CELLS = 50_000_000
SCAN_PIECE_CELLS = 200_000  # cells per trip to a worker thread: a client that goes away stops the scan between trips


async def table_columns(snap: ItemSnapshot, shape: pipeline.Shape, lo: int, hi: int) -> list[str]:
    """The columns of a tabular export of items ``[lo, hi)`` (contract 6.2). From the path index where it can
    tell (``pipeline.columns``), else by a scan of the selection (at most MAX_HEADER_SCAN_CELLS cells, else the
    400 ``invalid-input``). Raises the 400 no-columns error."""
    cols = None
    if not shape.unwind:
        paths: list[Any] = []
        whole = selection_blocks(lo, hi)
        await _scan_paths(snap, lo, whole[0] * BLOCK if whole else hi, paths)
        if whole:
            paths = await _merge_whole_blocks(snap, *whole, paths)
            await _scan_paths(snap, (whole[1] + 1) * BLOCK, hi, paths)
        cols = await anyio.to_thread.run_sync(pipeline.columns, shape, paths)
    if cols is None:
        collector = pipeline.ColumnCollector(shape)
        async for batch in snap.items(lo, hi):
            scan = _HeaderScan(collector, shape, batch)
            while await anyio.to_thread.run_sync(scan.next_piece):
                pass
        cols = collector.columns()
    return cols


class _HeaderScan:
    """The header rows of a batch of stored items fed to the collector SCAN_PIECE_CELLS cells at a time."""

    def __init__(self, collector: pipeline.ColumnCollector, shape: pipeline.Shape, batch: list[bytes]) -> None:
        self._collector = collector
        self._rows = (row for item in map(itemjson.load, batch) for row in shape.header_rows_and_drops(item))  # lazy
        # (a row's unwind, flatten and fields names count as cells of the piece: 5,000 unwind names were 5,000
        # steps a row for one cell)
        self._steps = _steps(shape)

    def next_piece(self) -> bool:
        """Feed the next piece; False when the batch is done. Raises the 400 past MAX_HEADER_SCAN_CELLS."""
        collector = self._collector
        stop = collector.visited + SCAN_PIECE_CELLS
        add = collector.add_row
        steps = work = self._steps
        more = False
        for row in self._rows:
            if row is not None:
                add(row)
            if collector.visited + work >= stop:
                more = True
                break
            work += steps
        if collector.visited > MAX_HEADER_SCAN_CELLS:
            raise errors.InvalidInput(
                f"The header of this export needs a scan of more than {MAX_HEADER_SCAN_CELLS:,} cells: with "
                "'unwind' the columns come from the rows themselves. Export fewer items at a time ('offset' and "
                "'limit'), or as json or jsonl, which have no header."
            )
        return more


# The path lists of whole blocks are read a window of blocks at a time and merged in a worker thread. Storage
# answers each distinct list once per read, which for uniform items is one list whatever the range; but items
# whose blocks all differ (each block's list may hold 20,000 paths) made one read of every block of the selection:
# 100 blocks of 19,000 paths were 3.7 s of parsing (on the event loop with PostgreSQL), 0.6 s of merging on the
# event loop, and the memory of all of them at once (64 blocks: 200 MB more). A window starts at INDEX_WINDOW
# blocks (8 such lists: under 50 MB; 16: 110 MB) and doubles up to INDEX_WINDOW_MAX after a read of fewer than
# INDEX_SMALL_READ paths in all: a read costs about 1.2 ms on PostgreSQL at load 9, so windows of 8 alone would
# make the header of 10,000,000 uniform items 1.5 s late. (A read after small ones may still bring up to
# INDEX_WINDOW_MAX large lists: the bound, where there was none.) Reading stops once the merge overflows.
INDEX_WINDOW = 8
INDEX_WINDOW_MAX = 64
INDEX_SMALL_READ = 40_000


async def _merge_whole_blocks(snap: ItemSnapshot, first: int, last: int, paths: list[Any]) -> list[Any]:
    """``paths`` with the path lists of blocks ``first`` to ``last`` (inclusive) merged in, in order."""
    merger = pipeline.BlockMerger()
    merger.add([paths])
    start, window = first, INDEX_WINDOW
    while start <= last and not merger.full:  # (full: the index can't tell any more, the caller scans)
        got = [block for _, block in await snap.block_paths(start, min(last, start + window - 1))]
        await anyio.to_thread.run_sync(merger.add, got)
        start += window
        window = min(window * 2, INDEX_WINDOW_MAX) if sum(map(len, got)) < INDEX_SMALL_READ else INDEX_WINDOW
    return merger.out


async def _scan_paths(snap: ItemSnapshot, lo: int, hi: int, paths: list[Any]) -> None:
    """Merge the paths of items ``[lo, hi)`` into ``paths`` (a partial block at an end of the selection)."""
    async for batch in snap.items(lo, hi):
        await anyio.to_thread.run_sync(_merge_items, paths, batch)


def _merge_items(paths: list[Any], batch: list[bytes]) -> None:
    seen: set[Any] = set()
    for item in itemjson.load_batch(batch):  # an item's paths walked once per skeleton (see prepare_push)
        shape = skeleton(item)
        if shape not in seen:
            seen.add(shape)
            pipeline.merge_paths(paths, pipeline.item_paths(item))


async def render(
    snap: ItemSnapshot,
    renderer: Any,
    shape: pipeline.Shape,
    columns: list[str] | None,
    lo: int,
    hi: int,
    desc: bool,
    raw: bool,
) -> AsyncIterator[bytes]:
    """The body: the renderer's start, each batch of items (the next read while this one is rendered and sent),
    its end. ``raw``: JSON formats of unchanged items copy the stored bytes (``raw_json``), without parsing them."""
    start = renderer.start(columns)
    if raw:
        yield start
        sep = renderer.raw_separator
        pieces = snap.joined(lo, hi, desc=desc, batch=EXPORT_BATCH, sep=sep, size=RAW_PIECE, buffers=True)
        async for joined in readahead(pieces):
            for piece in renderer.raw_joined(joined):
                yield piece
        yield renderer.end()
        return
    if shape.identity and renderer.renders_joined:
        # csv of unchanged items: rendered by _ccsv.c straight from storage's joined pieces, whole packed rows
        # where they fit, without a bytes object per item (storage's split into items, their allocation and
        # release were a sixth of the export's CPU)
        if start:  # (no header row and no BOM: the first rows are the first bytes, as below)
            yield start
        # Pieces of about one send (not PIECE_BYTES): a client that stops reading holds a rendered piece, the one
        # read ahead and storage's next in the server's memory (18 MiB with 4 MiB pieces, 4-11 MiB with these).
        # Storage's pieces as its buffers (its rows, not joined), rendered each, the lines sent as buffers too.
        rows_of = _rows_of(shape)
        pieces = snap.joined(lo, hi, desc=desc, batch=EXPORT_BATCH, size=SEND_PIECE, buffers=True)
        async for joined in readahead(pieces):
            yield await anyio.to_thread.run_sync(renderer.joined_rows, joined, rows_of)
        yield renderer.end()
        return
    if not shape.flatten and start:  # (only flatten's cap fails a row: else the start needn't wait for any row)
        yield start
        start = b""
    most: int | None = FIRST_PIECE  # (a small first piece: with flatten, the first byte waits for it)
    async for batch in readahead(snap.items(lo, hi, desc=desc, batch=EXPORT_BATCH)):
        rows = _Rows(renderer, shape, batch, first=most)
        most = None
        while (piece := await anyio.to_thread.run_sync(rows.next_piece)) is not None:
            if start or piece:  # with flatten, the start with the first piece rendered, even an empty one (xlsx's
                yield start + piece  # compressor holds rows back): a 400 of its rows is still an answer
                start = b""
    if start:
        yield start
    yield renderer.end()


# A piece of rendered rows also stops once the cost of its rows adds up to about this many bytes. A row costs its
# stored item's size, plus, where a row's work or memory does not follow that size, these byte-equivalents:
# * a row unwound from an item costs its own size too (each carries the item's other fields: EXPORT_BATCH rows of
#   one 200 kB item were 800 MB rendered in one piece), but its item's size only once: a row per element of a
#   6.4 MB item was a trip to the worker thread per row, 500,000 trips, 110 s for a json export;
# * a row of a tabular format costs CELL_BYTES per column: html makes a str per cell, csv a tuple of the columns,
#   and 4,000 rows of a 10-byte item each under 2,000 sparse columns were 8 million strings (+616 MiB);
# * a row costs STEP_BYTES per unwind, flatten and fields name, the loops each row goes through: 4,000 rows under
#   5,000 unwind names were one trip of 30 s, which a client that went away could not stop.
# Rows of small items still go EXPORT_BATCH at a time.
PIECE_BYTES = 4 * 1024 * 1024
CELL_BYTES = 64  # a cell's Python objects while its piece is rendered (html: a str of ~60 bytes and its slot)
STEP_BYTES = 16  # ~0.4 us a name, against ~0.1 us for a byte of a piece of 4 MiB of json
# Rows in an export's first piece: with flatten the answer's first byte waits for them (so that a 400 of the first
# row, flatten's cap, is still an answer), and EXPORT_BATCH rows of xlsx or html took 60-140 ms to render.
FIRST_PIECE = 16
T = TypeVar("T")


def row_cost(renderer: Any, shape: pipeline.Shape) -> int:
    """What a row costs in a piece beyond its item's size (see PIECE_BYTES)."""
    cells = len(renderer.columns) if getattr(renderer, "tabular", False) else 0
    return CELL_BYTES * cells + STEP_BYTES * _steps(shape)


def _steps(shape: pipeline.Shape) -> int:
    """The loops a row goes through for its shape: its unwind, flatten and fields names."""
    return len(shape.unwind) + len(shape.flatten) + len(shape.pick or ())


class _Rows:
    """The rows of a batch of stored items, rendered at most EXPORT_BATCH rows and about PIECE_BYTES of cost at a
    time: unwound rows multiply (one small item may give millions, one large item thousands of large rows), so
    neither memory nor a trip to the worker thread grows with them, and a client that goes away stops the work
    between pieces."""

    def __init__(self, renderer: Any, shape: pipeline.Shape, batch: list[bytes], *, first: int | None = None) -> None:
        """``first``: at most this many rows in the first piece (None: EXPORT_BATCH)."""
        self._renderer = renderer
        self._most = EXPORT_BATCH if first is None else first  # rows in the next piece at most
        self._extra = row_cost(renderer, shape)
        # Unchanged items make a row each at most: the renderer's stored_rows takes their stored bytes (csv renders
        # them without parsing them), pieces cut where their costs add up (``_stored_cut``: no Python per item,
        # which was a seventh of a csv row's CPU, with the GIL held). Other rows are lazy: parsed, unwound and
        # rendered in the thread, piece by piece, each with its cost (``_costed``).
        self._stored: list[bytes] | None = batch if shape.identity else None
        self._rows_of = _rows_of(shape)  # (an item the renderer leaves to the general path)
        self._at = 0  # the first stored item not rendered yet
        self._ends: list[int] = []  # each stored item's end in the batch's costs (made in the thread)
        self._rows: Iterator[tuple[dict[str, Any] | None, int]] = iter(())
        if not shape.identity:
            self._rows = _costed(batch, shape, self._extra)

    def next_piece(self) -> bytes | None:
        """The next piece's bytes (maybe b""), None when the batch is done."""
        if self._stored is not None:
            items, at = self._stored, self._at
            if at >= len(items):
                return None
            stop = self._stored_cut(items, at)
            self._at = stop
            self._most = EXPORT_BATCH
            piece = items if stop - at == len(items) else items[at:stop]
            return self._renderer.stored_rows(piece, self._rows_of)  # type: ignore[no-any-return]
        rows, more = _piece(self._rows, self._most)
        self._most = EXPORT_BATCH
        if not rows:
            return b"" if more else None
        return self._renderer.rows(rows)  # type: ignore[no-any-return]

    def _stored_cut(self, items: list[bytes], at: int) -> int:
        """Where the piece of stored items from ``at`` ends, as ``_piece`` cuts (each item its row)."""
        if not self._ends:
            sizes = accumulate(map(len, items))
            extra = self._extra
            self._ends = list(map(add, sizes, range(extra, extra * (len(items) + 1), extra)) if extra else sizes)
        ends = self._ends
        over = bisect_left(ends, (ends[at - 1] if at else 0) + PIECE_BYTES, at)  # the item that reaches PIECE_BYTES
        return min(over + 1, at + self._most, len(items))


def _costed(batch: list[bytes], shape: pipeline.Shape, extra: int) -> Iterator[tuple[dict[str, Any] | None, int]]:
    """Each row of the stored items with its cost (see PIECE_BYTES); (None, cost) for the work of an item or a row
    that makes no row, so that a piece stops in time even when nothing comes out."""
    unwinds = bool(shape.unwind)
    for raw in batch:
        cost = len(raw)  # (the item's size once, with its first row)
        for row in shape.rows_and_drops(itemjson.load(raw)):
            cost += extra
            if row is not None and unwinds:
                cost += _size(row, raw)
            yield row, cost
            cost = 0
        if cost:
            yield None, cost


def _size(row: dict[str, Any], raw: bytes) -> int:
    """About a row's rendered size: its compact JSON's (its item's size when orjson can't encode it: a lone
    surrogate, an integer past 64 bits)."""
    try:
        return len(orjson.dumps(row))
    except orjson.JSONEncodeError:
        return len(raw)


def _rows_of(shape: pipeline.Shape) -> Callable[[bytes], list[dict[str, Any]]]:
    """The rows of one stored item by the general path (parsed, then the shape's rows)."""
    return lambda raw: list(shape.iter_rows(itemjson.load(raw)))


def _piece(found: Iterator[tuple[T | None, int]], most: int | None = None) -> tuple[list[T], bool]:
    """The next of ``found`` up to ``most`` of them (None: EXPORT_BATCH) or about PIECE_BYTES of their cost (a
    None counts its cost but is left out), and whether ``found`` may have more."""
    most = EXPORT_BATCH if most is None else most
    out: list[T] = []
    size = 0
    for thing, cost in found:
        if thing is not None:
            out.append(thing)
        size += cost
        if size >= PIECE_BYTES or len(out) >= most:
            return out, True
    return out, False
