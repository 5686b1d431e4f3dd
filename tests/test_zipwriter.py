"""openkvs.zipwriter: archives open in independent readers, sizes are exact, any byte range is the same slice of
the whole, and ZIP64 records appear exactly where a size, offset or count needs them.

Expected values come from the ZIP format itself (Python's ``zipfile``, ``unzip``, ``zipinfo``, ``bsdtar``, and
struct parsing written here from APPNOTE), never from the writer's own output.
"""

from __future__ import annotations

import asyncio
import calendar
import io
import os
import shutil
import string
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkvs.zipwriter import (
    ArchiveDataError,
    archive_size,
    archive_size_from_totals,
    build_archive,
    iter_range,
)
from tests.conftest import examples

GiB = 1 << 30
LIMIT32 = 0xFFFFFFFF
KEY_ALPHABET = string.ascii_letters + string.digits + "!-_.'()"
CHUNK = 256 * 1024  # the coalescing size the module documents


@dataclass(frozen=True)
class Entry:
    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime


def entry_for(key: str, data: bytes, when: datetime) -> Entry:
    return Entry(key, len(data), zlib.crc32(data), when)


# -- helpers: driving iter_range --------------------------------------------------------------------------------


class Source:
    """Entries in batches plus a data reader, recording how iter_range uses them."""

    def __init__(self, entries, data=None, batch_size=1000, piece=None, zeros=False):
        self.entries = list(entries)
        self.data = data or {}
        self.batch_size = batch_size
        self.piece = piece  # size of the pieces read() yields (None: one piece)
        self.zeros = zeros  # data is all zeros, generated on the fly
        self.batch_calls = 0
        self.batches_pulled = 0
        self.closed = 0
        self.reads: list[tuple[str, int, int]] = []

    def batches(self):
        self.batch_calls += 1

        async def gen():
            try:
                for i in range(0, len(self.entries), self.batch_size):
                    self.batches_pulled += 1
                    yield self.entries[i : i + self.batch_size]
            finally:
                self.closed += 1

        return gen()

    async def read(self, entry, lo, hi):
        self.reads.append((entry.key, lo, hi))
        step = self.piece or max(hi - lo, 1)
        for at in range(lo, hi, step):
            n = min(step, hi - at)
            yield bytes(n) if self.zeros or entry.key not in self.data else self.data[entry.key][at : at + n]

    def chunks(self, start, end):
        async def collect():
            return [c async for c in iter_range(self.batches, start, end, self.read)]

        return asyncio.run(collect())

    def get(self, start, end):
        return b"".join(self.chunks(start, end))


class RangeFile(io.RawIOBase):
    """A seekable read-only file whose every read is served by one iter_range call."""

    def __init__(self, source: Source, size: int):
        self.source = source
        self.size = size
        self.pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        assert self.pos >= 0
        return self.pos

    def readinto(self, buffer):
        n = max(min(len(buffer), self.size - self.pos), 0)
        if n == 0:
            return 0
        calls_before = self.source.batch_calls
        data = self.source.get(self.pos, self.pos + n)
        assert self.source.batch_calls - calls_before <= 2
        assert len(data) == n
        buffer[:n] = data
        self.pos += n
        return n


# -- helpers: independent parsing -------------------------------------------------------------------------------


def extras(blob: bytes) -> dict[int, bytes]:
    out, at = {}, 0
    while at < len(blob):
        tag, length = struct.unpack_from("<HH", blob, at)
        assert tag not in out
        out[tag] = blob[at + 4 : at + 4 + length]
        at += 4 + length
    assert at == len(blob)
    return out


def parse_local(blob: bytes) -> dict:
    (sig, needed, flags, method, _t, _d, crc, csize, usize, nlen, xlen) = struct.unpack_from("<IHHHHHIIIHH", blob)
    assert sig == 0x04034B50
    return dict(
        needed=needed, flags=flags, method=method, crc=crc, csize=csize, usize=usize,
        name=blob[30 : 30 + nlen], extra=extras(blob[30 + nlen : 30 + nlen + xlen]), length=30 + nlen + xlen,
    )


def parse_end(tail: bytes) -> dict:
    """The last 98 bytes (or fewer) of an archive: the classic EOCD and, if present, the ZIP64 records."""
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = struct.unpack("<IHHHHIIH", tail[-22:])
    assert (sig, disk, cd_disk, comment) == (0x06054B50, 0, 0, 0) and n_disk == n_total
    out = dict(count=n_total, cd_size=cd_size, cd_offset=cd_offset, zip64=None)
    if len(tail) >= 42 and tail[-42:-38] == b"PK\x06\x07":
        lsig, ldisk, eocd64_at, disks = struct.unpack("<IIQI", tail[-42:-22])
        assert (ldisk, disks) == (0, 1)
        rec = struct.unpack("<IQHHIIQQQQ", tail[-98:-42])
        assert rec[0] == 0x06064B50 and rec[1] == 44 and rec[3] == 45
        out["zip64"] = dict(at=eocd64_at, count=rec[6], cd_size=rec[8], cd_offset=rec[9])
    return out


def ut_mtime(extra: dict[int, bytes]) -> int:
    flags, mtime = struct.unpack("<BI", extra[0x5455])
    assert flags == 1
    return mtime


def expected_date_time(dt: datetime) -> tuple:
    dt = dt.astimezone(UTC)
    if dt.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if dt.year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second - dt.second % 2)


def expected_mtime(dt: datetime) -> int:
    return min(max(calendar.timegm(dt.astimezone(UTC).timetuple()), 0), 2**31 - 1)


def check_with_zipfile(archive: bytes, items: list[tuple[Entry, bytes]]) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [i.filename for i in infos] == [e.key for e, _ in items]
        for info, (entry, data) in zip(infos, items, strict=True):
            assert zf.read(info) == data
            assert info.CRC == zlib.crc32(data) and info.file_size == info.compress_size == len(data)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == expected_date_time(entry.modified_at)
            assert info.flag_bits == 0x0800  # UTF-8, and no data descriptor
            assert info.create_system == 3 and info.external_attr >> 16 == 0o100644
            central = extras(info.extra)
            assert set(central) == {0x5455}  # small archive: no ZIP64 extra
            assert ut_mtime(central) == expected_mtime(entry.modified_at)
            local = parse_local(archive[info.header_offset : info.header_offset + 400])
            assert local["name"] == entry.key.encode() and set(local["extra"]) == {0x5455}
            assert local["needed"] == 20 and local["usize"] == local["csize"] == len(data)
            assert ut_mtime(local["extra"]) == expected_mtime(entry.modified_at)
    end = parse_end(archive[-98:])
    assert end["zip64"] is None and end["count"] == len(items)
    assert end["cd_offset"] + end["cd_size"] + 22 == len(archive)


# -- strategies -------------------------------------------------------------------------------------------------

keys = st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=256).filter(lambda k: k not in (".", ".."))
times = st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC))
realistic_times = st.datetimes(min_value=datetime(1980, 1, 2), max_value=datetime(2037, 12, 31), timezones=st.just(UTC))


def entry_sets(when=times, max_data=3 * 1024, min_size=0, max_size=12):
    rows = st.tuples(keys, st.binary(max_size=max_data), when)
    return st.lists(rows, min_size=min_size, max_size=max_size, unique_by=lambda t: t[0]).map(
        lambda rows: [(entry_for(k, d, t), d) for k, d, t in sorted(rows)]
    )


def source_for(items, batch_size=1000, piece=None):
    return Source([e for e, _ in items], {e.key: d for e, d in items}, batch_size=batch_size, piece=piece)


# -- property tests ---------------------------------------------------------------------------------------------


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=entry_sets(), batch_size=st.integers(1, 5), piece=st.none() | st.integers(1, 700))
def test_whole_archive_is_valid_and_sized_exactly(items, batch_size, piece):
    archive = build_archive(items)
    check_with_zipfile(archive, items)
    assert archive_size(e for e, _ in items) == len(archive)
    assert archive_size_from_totals(
        len(items), sum(len(e.key.encode()) for e, _ in items), sum(len(d) for _, d in items), 0
    ) == len(archive)
    source = source_for(items, batch_size, piece)
    assert source.get(0, len(archive)) == archive
    assert source.batch_calls == 2
    assert build_archive(items) == archive  # deterministic


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=entry_sets(), batch_size=st.integers(1, 5), piece=st.none() | st.integers(1, 700), data=st.data())
def test_every_range_is_the_same_slice(items, batch_size, piece, data):
    archive = build_archive(items)
    size = len(archive)
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, size), label="end")
    source = source_for(items, batch_size, piece)
    chunks = source.chunks(start, end)
    assert b"".join(chunks) == archive[start:end]

    # read() was asked for exactly the data bytes inside the range, nothing else, in order.
    expected_reads = []
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        cd_offset = zf.start_dir
        for info in zf.infolist():
            data_at = info.header_offset + parse_local(archive[info.header_offset :])["length"]
            lo, hi = max(start - data_at, 0), min(end - data_at, info.file_size)
            if hi > lo:
                expected_reads.append((info.filename, lo, hi))
    assert source.reads == expected_reads

    # batches() is called twice only when the range reaches the central directory; iterators get closed.
    assert source.batch_calls == (0 if start == end else 1 if end <= cd_offset else 2)
    assert source.closed == source.batch_calls
    # Coalescing: a chunk under the coalescing size is the last one or comes just before a big one.
    for i, chunk in enumerate(chunks):
        assert chunk
        if len(chunk) < CHUNK and i + 1 < len(chunks):
            assert len(chunks[i + 1]) >= CHUNK


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=entry_sets(max_data=CHUNK + 5000, max_size=10) | entry_sets(),
    batch_size=st.integers(1, 5),
    piece=st.none() | st.integers(1, 700),
    data=st.data(),
)
def test_inline_fast_path_gives_the_same_bytes(items, batch_size, piece, data):
    """Entries whose data ``inline`` hands over are copied without ``read``; the bytes are the same as when every
    entry goes through ``read``, for any subset of inline entries and any range."""
    archive = build_archive(items)
    size = len(archive)
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, size), label="end")
    held = data.draw(st.sets(st.sampled_from([e.key for e, _ in items])) if items else st.just(set()), label="held")
    by_key = {e.key: d for e, d in items}
    slow = source_for(items, batch_size, piece)
    fast = source_for(items, batch_size, piece)

    def inline(entry):
        return by_key[entry.key] if entry.key in held else None

    async def collect():
        return [c async for c in iter_range(fast.batches, start, end, fast.read, inline)]

    chunks = asyncio.run(collect())
    assert b"".join(chunks) == b"".join(slow.chunks(start, end)) == archive[start:end]
    assert fast.reads == [r for r in slow.reads if r[0] not in held]
    assert fast.batch_calls == slow.batch_calls and fast.closed == fast.batch_calls
    for i, chunk in enumerate(chunks):
        assert chunk
        assert len(chunk) < 2 * CHUNK or len(chunk) == len(by_key.get(chunk_key(chunk, by_key), b""))
        if len(chunk) < CHUNK and i + 1 < len(chunks):
            assert len(chunks[i + 1]) >= CHUNK


def chunk_key(chunk, by_key):
    """The key whose whole data is this chunk, if any (a big inline record passes through as one chunk)."""
    return next((k for k, d in by_key.items() if d == chunk), None)


def test_inline_data_of_the_wrong_length_raises():
    items = small_items(3)
    source = source_for(items)

    async def run():
        total = archive_size(e for e, _ in items)
        return [c async for c in iter_range(source.batches, 0, total, source.read, lambda e: b"short")]

    with pytest.raises(ArchiveDataError):
        asyncio.run(run())


sizes = st.one_of(
    st.integers(0, 5000),
    st.sampled_from([LIMIT32 - 200, LIMIT32 - 1, LIMIT32, LIMIT32 + 1, 5 * GiB]),
    st.integers(0, 6 * GiB),
)


_MANY_EMPTY = [Entry(f"t{i:05d}", 0, 0, datetime(2024, 1, 1, tzinfo=UTC)) for i in range(0xFFFF)]


@settings(max_examples=examples(300), deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(1, 256), sizes), max_size=8),
    count_extra=st.sampled_from([0, 0, 0, 0, 0, 0, 0xFFFE - 4, 0xFFFF]),
)
def test_size_from_totals_agrees_with_a_pass(rows, count_extra):
    when = datetime(2024, 1, 1, tzinfo=UTC)
    entries = [Entry(f"{i:03d}".ljust(n, "k"), size, 0, when) for i, (n, size) in enumerate(rows)]
    entries += _MANY_EMPTY[:count_extra]
    key_bytes = sum(len(e.key) for e in entries)
    decoded = sum(e.decoded_size for e in entries)
    big = sum(e.decoded_size >= LIMIT32 for e in entries)
    got = archive_size_from_totals(len(entries), key_bytes, decoded, big)
    if got is not None:
        assert got == archive_size(entries)
    if decoded + 400 * len(entries) < LIMIT32 - 2**20:  # far from any 4 GiB offset: must be decidable
        assert got is not None


def test_size_from_totals_rejects_inconsistent_totals():
    with pytest.raises(ValueError):
        archive_size_from_totals(1, 1, 10, 1)  # a "big" entry cannot hold 10 bytes
    with pytest.raises(ValueError):
        archive_size_from_totals(1, 1, 10, 2)
    with pytest.raises(ValueError):
        archive_size_from_totals(-1, 0, 0, 0)


def test_empty_archive():
    archive = build_archive([])
    assert archive == b"PK\x05\x06" + bytes(18)  # APPNOTE 4.3.16 with every count, size and offset 0
    assert archive_size([]) == archive_size_from_totals(0, 0, 0, 0) == 22
    assert Source([]).get(0, 22) == archive
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.namelist() == []


def test_dos_times_clamped_and_floored():
    cases = [
        (datetime(1965, 6, 1, 12, 0, 0, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(1979, 12, 31, 23, 59, 59, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(1980, 1, 1, 0, 0, 1, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(2026, 11, 28, 4, 48, 31, 495000, tzinfo=UTC), (2026, 11, 28, 4, 48, 30)),
        (datetime(2107, 12, 31, 23, 59, 59, tzinfo=UTC), (2107, 12, 31, 23, 59, 58)),
        (datetime(2150, 3, 4, 5, 6, 7, tzinfo=UTC), (2107, 12, 31, 23, 59, 58)),
        # not UTC on input: the archive holds the UTC time
        (datetime(2024, 1, 1, 1, 30, 0, tzinfo=timezone(timedelta(hours=2))), (2023, 12, 31, 23, 30, 0)),
    ]
    items = [(entry_for(f"k{i}", b"x", when), b"x") for i, (when, _) in enumerate(cases)]
    with zipfile.ZipFile(io.BytesIO(build_archive(items))) as zf:
        assert [i.date_time for i in zf.infolist()] == [want for _, want in cases]
        stamps = [ut_mtime(extras(i.extra)) for i in zf.infolist()]
    assert stamps[0] == 0  # before 1970: clamped
    assert stamps[1] == 315532799  # 1979-12-31T23:59:59Z: the UT extra is not clamped to the DOS range
    assert stamps[3] == 1795841311  # `date -u -d 2026-11-28T04:48:31Z +%s`: seconds kept
    assert stamps[5] == 2**31 - 1  # past 2038: clamped to what every reader reads the same way


def test_works_with_storage_record_meta():
    from openkvs.storage.base import RecordMeta

    data = b'{"hello": "world"}'
    meta = RecordMeta(
        key="INPUT", content_type="application/json", content_encoding="gzip", size=999,
        decoded_size=len(data), crc32=zlib.crc32(data), modified_at=datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC),
        blob=None,
    )
    archive = build_archive([(meta, data)])
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.read("INPUT") == data


# -- iter_range behaviour ---------------------------------------------------------------------------------------


def small_items(n=20, size=100):
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    return [(entry_for(f"k{i:04d}", bytes([i % 256]) * size, when), bytes([i % 256]) * size) for i in range(n)]


def test_range_in_first_entry_pulls_one_batch_and_closes_it():
    source = source_for(small_items(), batch_size=2)
    assert source.get(0, 10) == build_archive(small_items())[:10]
    assert (source.batch_calls, source.batches_pulled, source.closed) == (1, 1, 1)
    assert source.reads == []


def test_range_in_the_end_record_reads_no_data():
    items = small_items()
    archive = build_archive(items)
    source = source_for(items, batch_size=3)
    assert source.get(len(archive) - 22, len(archive)) == archive[-22:]
    assert source.reads == [] and source.batch_calls == 2


def test_large_data_chunks_pass_through_uncopied():
    big = os.urandom(3 * CHUNK + 3 * 1024)
    items = [(entry_for("a", b"head", datetime(2024, 1, 1, tzinfo=UTC)), b"head"),
             (entry_for("b", big, datetime(2024, 1, 1, tzinfo=UTC)), big)]
    handed_out = []

    class Spy(Source):
        async def read(self, entry, lo, hi):
            async for piece in super().read(entry, lo, hi):
                handed_out.append(piece)
                yield piece

    source = Spy([e for e, _ in items], {e.key: d for e, d in items}, piece=CHUNK + 1024)
    chunks = source.chunks(0, archive_size(e for e, _ in items))
    assert b"".join(chunks) == build_archive(items)
    big_pieces = [p for p in handed_out if len(p) >= CHUNK]
    assert len(big_pieces) == 3
    for piece in big_pieces:
        assert any(chunk is piece for chunk in chunks)
    assert all(len(c) <= 2 * CHUNK or any(c is p for p in big_pieces) for c in chunks)


@pytest.mark.parametrize("delta", [-1, +1])
def test_read_returning_wrong_length_raises(delta):
    items = small_items(3)

    class Liar(Source):
        async def read(self, entry, lo, hi):
            yield self.data[entry.key][lo:hi] + b"!" if delta > 0 else self.data[entry.key][lo : hi - 1]

    source = Liar([e for e, _ in items], {e.key: d for e, d in items})
    with pytest.raises(ArchiveDataError):
        source.get(0, archive_size(e for e, _ in items))


def test_read_yielding_too_much_is_caught_before_emitting_it():
    items = small_items(1, size=10)
    emitted = []

    class Liar(Source):
        async def read(self, entry, lo, hi):
            yield b"\0" * (hi - lo + 1)

    source = Liar([e for e, _ in items])

    async def run():
        async for chunk in iter_range(source.batches, 0, 200, source.read):
            emitted.append(chunk)

    with pytest.raises(ArchiveDataError):
        asyncio.run(run())
    assert b"".join(emitted) == b""  # headers were still buffered: nothing corrupt went out


def test_entries_changing_between_passes_raise():
    items = small_items(5)
    source = source_for(items)
    original = source.batches

    def shrinking():
        if source.batch_calls == 1:
            source.entries = source.entries[:-1]
        return original()

    async def run():
        return [c async for c in iter_range(shrinking, 0, archive_size(e for e, _ in items), source.read)]

    with pytest.raises(ArchiveDataError):
        asyncio.run(run())


@pytest.mark.parametrize("short", [1, 22, 60, 500])  # in the end record, the central directory, the local part
def test_an_archive_longer_than_announced_fails_instead_of_ending_at_the_announced_size(short):
    """Sized from totals a storage keeps (a whole store's ZIP), the Content-Length could understate the archive if
    the totals were wrong: the bytes up to it would look like a whole download. Announced as ``total``, the archive's
    end must be there: the writer fails (the server aborts the connection), whatever part the cut falls in."""
    items = small_items(8, size=40)
    whole = archive_size(e for e, _ in items)
    announced = whole - short
    source = source_for(items, batch_size=3)

    async def run(size):
        return b"".join([c async for c in iter_range(source.batches, 0, announced, source.read, total=size)])

    with pytest.raises(ArchiveDataError, match="longer than"):
        asyncio.run(run(announced))
    assert asyncio.run(run(None)) == build_archive(items)[:announced]  # a plain range of the same bytes is fine
    assert source.get(0, whole) == build_archive(items)  # announced right: the whole archive
    exact = b"".join(asyncio.run(_collect(iter_range(source.batches, 0, whole, source.read, total=whole))))
    assert exact == build_archive(items)


async def _collect(chunks):
    return [c async for c in chunks]


def test_bad_ranges_raise():
    items = small_items(2)
    size = archive_size(e for e, _ in items)
    with pytest.raises(ValueError):
        source_for(items).get(5, 4)
    with pytest.raises(ValueError):
        source_for(items).get(-1, 4)
    with pytest.raises(ValueError):
        source_for(items).get(0, size + 1)
    assert source_for(items).get(7, 7) == b""


# -- independent readers ----------------------------------------------------------------------------------------


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is required in CI")
        pytest.skip(f"{binary} is not installed")
    return path


def run(*args, cwd=None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def readers_check(tmp_path, items):
    archive = build_archive(items)
    path = tmp_path / "records.zip"
    path.write_bytes(archive)
    names = [e.key for e, _ in items]
    assert "No errors detected" in run(need("unzip"), "-t", str(path))
    assert run(need("zipinfo"), "-1", str(path)).splitlines() == names
    assert run(need("bsdtar"), "-tf", str(path)).splitlines() == names
    return path


def test_readers_on_a_varied_archive(tmp_path):
    when = [datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), datetime(1985, 7, 1, 0, 0, 1, tzinfo=UTC),
            datetime(2037, 12, 31, 12, 0, 0, tzinfo=UTC)]
    rows = {
        "!'()-_.": b"",
        "(draft)": os.urandom(70_000),
        "INPUT": b'{"a": 1}',
        "OUTPUT.json": b"[]",
        "a" * 200: os.urandom(5000),
        "big.bin": os.urandom(300_000),
        "it's": b"quote",
        "z-last": b"\0" * 1000,
    }
    items = [(entry_for(k, d, when[i % 3]), d) for i, (k, d) in enumerate(sorted(rows.items()))]
    path = readers_check(tmp_path, items)

    listing = run("zipinfo", "-l", str(path))
    for entry, _data in items:
        assert entry.key in listing
    assert "stor" in listing and "defl" not in listing

    out = tmp_path / "unzip"
    out.mkdir()
    run("unzip", "-q", str(path), "-d", str(out))
    for entry, data in items:
        target = out / entry.key
        assert target.read_bytes() == data
        assert int(target.stat().st_mtime) == calendar.timegm(entry.modified_at.timetuple())  # from the UT extra

    out2 = tmp_path / "bsdtar"
    out2.mkdir()
    run("bsdtar", "-xf", str(path), cwd=out2)
    for entry, data in items:
        assert (out2 / entry.key).read_bytes() == data


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=entry_sets(when=realistic_times, min_size=1, max_size=8))
def test_readers_on_random_archives(tmp_path, items):
    readers_check(tmp_path, items)


def test_readers_on_the_empty_archive(tmp_path):
    path = tmp_path / "empty.zip"
    path.write_bytes(build_archive([]))
    done = subprocess.run([need("unzip"), "-t", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "zipfile is empty" in done.stdout  # unzip's warning status, not an error
    assert run(need("bsdtar"), "-tf", str(path)) == ""


# -- ZIP64 ------------------------------------------------------------------------------------------------------


def _gf2_times(matrix, vector):
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine: the CRC-32 of A+B from crc(A), crc(B) and len(B)."""
    if len2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = [_gf2_times(odd, odd[n]) for n in range(32)]  # two zero bits
    odd = [_gf2_times(even, even[n]) for n in range(32)]  # four zero bits
    while True:
        even = [_gf2_times(odd, odd[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, even[n]) for n in range(32)]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32_of_zeros(n: int) -> int:
    result, block, block_len = 0, zlib.crc32(b"\0"), 1
    while n:
        if n & 1:
            result = crc32_combine(result, block, block_len)
        block = crc32_combine(block, block, block_len)
        block_len *= 2
        n >>= 1
    return result


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 65_536, (1 << 20) + 7])
def test_crc32_of_zeros_helper(n):
    assert crc32_of_zeros(n) == zlib.crc32(bytes(n))


def zeros_entry(key: str, size: int) -> Entry:
    return Entry(key, size, crc32_of_zeros(size), datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC))


def open_lazily(entries, data=None) -> tuple[zipfile.ZipFile, RangeFile, Source]:
    """zipfile over a RangeFile: only the bytes zipfile asks for are ever produced."""
    source = Source(entries, data, batch_size=2, piece=1 << 20, zeros=data is None)
    fileobj = RangeFile(source, archive_size(entries))
    return zipfile.ZipFile(fileobj), fileobj, source


def read_at(fileobj: RangeFile, offset: int, n: int) -> bytes:
    fileobj.seek(offset)
    return fileobj.read(n)


def tail_of(fileobj: RangeFile) -> dict:
    return parse_end(read_at(fileobj, max(fileobj.size - 98, 0), 98))


def test_zip64_big_entries_and_far_offsets():
    when = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
    smalls = {"d-after-1": b"first past 4 GiB", "d-after-2": os.urandom(3000), "d-after-3": b""}
    entries = [
        Entry("a-small", 5, zlib.crc32(b"hello"), when),
        zeros_entry("b-exactly-ffffffff", LIMIT32),
        zeros_entry("c-five-gib", 5 * GiB),
        *[entry_for(k, v, when) for k, v in smalls.items()],
    ]
    data = {"a-small": b"hello", **smalls}

    class Mixed(Source):
        async def read(self, entry, lo, hi):
            self.reads.append((entry.key, lo, hi))
            if entry.key in data:
                yield data[entry.key][lo:hi]
            else:
                for at in range(lo, hi, 1 << 20):
                    yield bytes(min(1 << 20, hi - at))

    source = Mixed(entries, batch_size=2)
    fileobj = RangeFile(source, archive_size(entries))
    assert fileobj.size > 9 * GiB
    assert archive_size_from_totals(
        len(entries), sum(len(e.key) for e in entries), sum(e.decoded_size for e in entries), 2
    ) is None  # local offsets past 4 GiB: the caller must do a pass

    with zipfile.ZipFile(fileobj) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert list(infos) == [e.key for e in entries]
        assert infos["b-exactly-ffffffff"].file_size == LIMIT32
        assert infos["c-five-gib"].file_size == 5 * GiB
        for key, value in data.items():
            assert zf.read(key) == value  # CRC checked by zipfile; local header found at the far offset
        for key in ("b-exactly-ffffffff", "c-five-gib"):
            with zf.open(key) as f:
                assert f.read(5000) == bytes(5000)
        # No read of the big entries went past what was asked for.
        assert all(hi - lo <= 1 << 20 for k, lo, hi in source.reads if k.startswith(("b-", "c-")))

        central = {k: extras(i.extra) for k, i in infos.items()}
        offsets = {k: i.header_offset for k, i in infos.items()}
    assert set(central["a-small"]) == {0x5455}
    for key in ("b-exactly-ffffffff", "c-five-gib"):
        size = infos[key].file_size
        want = struct.pack("<QQ", size, size) + (struct.pack("<Q", offsets[key]) if offsets[key] >= LIMIT32 else b"")
        assert central[key][0x0001] == want
    assert offsets["c-five-gib"] >= LIMIT32
    for key in smalls:
        assert offsets[key] > 9 * GiB
        assert central[key][0x0001] == struct.pack("<Q", offsets[key])  # offset only, sizes stay 32-bit

    # Central headers, parsed by hand: 0xFFFFFFFF exactly in the replaced fields, version needed 45 for ZIP64.
    cd_offset = zf.start_dir
    blob = read_at(fileobj, cd_offset, fileobj.size - cd_offset)
    at = 0
    for entry in entries:
        fields = struct.unpack_from("<IHHHHHHIIIHHHHHII", blob, at)
        assert fields[0] == 0x02014B50 and fields[1] == 0x031E
        big, far = entry.decoded_size >= LIMIT32, offsets[entry.key] >= LIMIT32
        assert fields[2] == (45 if big or far else 20)
        assert fields[8] == fields[9] == (LIMIT32 if big else entry.decoded_size)
        assert fields[16] == (LIMIT32 if far else offsets[entry.key])
        at += 46 + fields[10] + fields[11] + fields[12]

    # Local headers: ZIP64 extra (both sizes) exactly for the big entries.
    for entry in entries:
        local = parse_local(read_at(fileobj, offsets[entry.key], 400))
        big, far = entry.decoded_size >= LIMIT32, offsets[entry.key] >= LIMIT32
        assert local["needed"] == (45 if big or far else 20)
        assert local["flags"] == 0x0800 and local["crc"] == entry.crc32
        if big:
            assert local["usize"] == local["csize"] == LIMIT32
            assert local["extra"][0x0001] == struct.pack("<QQ", entry.decoded_size, entry.decoded_size)
        else:
            assert 0x0001 not in local["extra"] and local["usize"] == entry.decoded_size

    end = tail_of(fileobj)
    assert end["zip64"] is not None
    assert end["count"] == len(entries)  # the count does not overflow: kept
    assert end["cd_offset"] == LIMIT32  # the offset does: marker
    assert end["cd_size"] == end["zip64"]["cd_size"] < LIMIT32
    assert end["zip64"]["cd_offset"] == cd_offset and end["zip64"]["count"] == len(entries)
    assert end["zip64"]["at"] == cd_offset + end["cd_size"]


def test_entry_just_under_the_limit_gets_no_zip64_extra():
    entries = [zeros_entry("x", LIMIT32 - 1)]
    zf, fileobj, _ = open_lazily(entries)
    info = zf.infolist()[0]
    assert info.file_size == LIMIT32 - 1
    assert set(extras(info.extra)) == {0x5455}
    local = parse_local(read_at(fileobj, 0, 100))
    assert local["needed"] == 20 and local["usize"] == LIMIT32 - 1 and set(local["extra"]) == {0x5455}
    with zf.open("x") as f:
        assert f.read(100) == bytes(100)
    # ... but the central directory starts past 0xFFFFFFFF, so the end records are ZIP64.
    end = tail_of(fileobj)
    assert end["cd_offset"] == LIMIT32 and end["zip64"]["cd_offset"] == zf.start_dir > LIMIT32
    assert archive_size_from_totals(1, 1, LIMIT32 - 1, 0) == fileobj.size


def test_exactly_ffffffff_alone_gets_zip64_extra():
    entries = [zeros_entry("x", LIMIT32)]
    zf, fileobj, _ = open_lazily(entries)
    assert extras(zf.infolist()[0].extra)[0x0001] == struct.pack("<QQ", LIMIT32, LIMIT32)
    assert archive_size_from_totals(1, 1, LIMIT32, 1) == fileobj.size


@pytest.mark.parametrize("cd_offset, zip64", [(LIMIT32 - 1, False), (LIMIT32, True)])
def test_central_directory_offset_boundary(cd_offset, zip64):
    # One entry named "x": its local header is 30 + 1 + 9 bytes, so the data size puts the directory exactly here.
    entries = [zeros_entry("x", cd_offset - 40)]
    zf, fileobj, _ = open_lazily(entries)
    assert zf.start_dir == cd_offset
    end = tail_of(fileobj)
    assert (end["zip64"] is not None) == zip64
    assert end["cd_offset"] == (LIMIT32 if zip64 else cd_offset)
    assert set(extras(zf.infolist()[0].extra)) == {0x5455}
    assert archive_size_from_totals(1, 1, cd_offset - 40, 0) == fileobj.size


@pytest.mark.parametrize("second_at, far", [(LIMIT32 - 1, False), (LIMIT32, True)])
def test_local_header_offset_boundary(second_at, far):
    # "x" has a 30 + 1 + 9 byte local header; its size puts the local header of "y" exactly at second_at.
    when = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
    entries = [zeros_entry("x", second_at - 40), entry_for("y", b"why", when)]
    zf, fileobj, _ = open_lazily(entries, {"y": b"why"})
    info = zf.getinfo("y")
    assert info.header_offset == second_at
    assert zf.read("y") == b"why"
    central = extras(info.extra)
    if far:
        assert central[0x0001] == struct.pack("<Q", LIMIT32)
    else:
        assert 0x0001 not in central
    assert 0x0001 not in parse_local(read_at(fileobj, second_at, 100))["extra"]
    got = archive_size_from_totals(2, 2, second_at - 40 + 3, 0)
    assert got is None or got == fileobj.size
    assert archive_size_from_totals(2, 2, second_at - 40 - 2, 0) is not None  # a little lower it is decidable


def tiny_items(n):
    when = datetime(2024, 1, 1, tzinfo=UTC)
    return [(entry_for(f"k{i:06d}", bytes([i % 251]), when), bytes([i % 251])) for i in range(n)]


def check_count(archive: bytes, items, zip64: bool) -> None:
    n = len(items)
    assert archive_size(e for e, _ in items) == len(archive)
    assert archive_size_from_totals(n, sum(len(e.key) for e, _ in items), n, 0) == len(archive)
    end = parse_end(archive[-98:])
    assert (end["zip64"] is not None) == zip64
    assert end["count"] == (0xFFFF if zip64 else n)
    if zip64:
        assert end["zip64"]["count"] == n
        assert end["cd_offset"] == end["zip64"]["cd_offset"] < LIMIT32  # not overflowing: real values kept
        assert end["cd_size"] == end["zip64"]["cd_size"]
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        infos = zf.infolist()
        assert len(infos) == n
        for i in (0, 1, n // 2, n - 1):
            assert zf.read(infos[i]) == items[i][1]


@pytest.mark.parametrize("n, zip64", [(0xFFFE, False), (0xFFFF, True)])
def test_entry_count_boundary(n, zip64):
    items = tiny_items(n)
    check_count(build_archive(items), items, zip64)


def test_70000_entries(tmp_path):
    items = tiny_items(70_000)
    source = source_for(items, batch_size=1000)
    size = archive_size(e for e, _ in items)
    archive = source.get(0, size)
    assert archive == build_archive(items)
    check_count(archive, items, zip64=True)

    # Lazily, through iter_range: zipfile reads the whole central directory through one ranged read.
    with zipfile.ZipFile(RangeFile(source_for(items, batch_size=4096), size)) as zf:
        assert zf.namelist()[-1] == "k069999"
        assert zf.read("k069999") == items[-1][1]

    path = tmp_path / "many.zip"
    path.write_bytes(archive)
    assert "No errors detected" in run(need("unzip"), "-tq", str(path))
    names = run(need("zipinfo"), "-1", str(path)).splitlines()
    assert len(names) == 70_000 and names[-1] == "k069999"
    assert len(run(need("bsdtar"), "-tf", str(path)).splitlines()) == 70_000
