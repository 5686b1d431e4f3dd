"""A snapshot's batch of records: the rows as the database gave them, turned into record objects only if someone
iterates them, and the columns the ZIP writer lays a whole batch out from (zipwriter.Columns)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar, overload

from openkvs.zipwriter import Columns

R = TypeVar("R")


class ZipRow(NamedTuple):
    """A record as an archive's central directory sees it (satisfies zipwriter.ZipEntry): what
    ``Snapshot.zip_entries`` gives."""

    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime


class RowBatch(Sequence[R], Generic[R]):
    """A sequence of records made from ``rows`` by ``make`` on first use (an archive of small records never
    makes them: the writer reads ``columns``). ``last_key``: the key of the last row, for the next batch's query."""

    __slots__ = ("_rows", "_make", "_made", "columns", "last_key")

    def __init__(self, rows: Sequence[Any], make: Callable[[Any], R], columns: Columns | None, last_key: str):
        self._rows = rows
        self._make = make
        self._made: list[R] | None = None
        self.columns = columns
        self.last_key = last_key

    def _records(self) -> list[R]:
        if self._made is None:
            self._made = list(map(self._make, self._rows))
        return self._made

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> R: ...
    @overload
    def __getitem__(self, i: slice) -> list[R]: ...
    def __getitem__(self, i: int | slice) -> R | list[R]:
        return self._records()[i]

    def __iter__(self) -> Iterator[R]:
        return iter(self._records())
