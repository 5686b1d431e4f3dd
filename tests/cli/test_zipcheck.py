"""The download's check computed as the bytes arrive (openkvs/client/zipcheck.py): it accepts what zipfile accepts
and refuses what zipfile refuses, whatever pieces the network cuts the archive into."""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openkvs.client.zipcheck import ZipStream, feed_file
from openkvs.zipwriter import build_archive

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    key: str
    decoded_size: int
    crc32: int
    modified_at: datetime


def openkvs_zip(records: dict[str, bytes]) -> bytes:
    return build_archive([(Entry(k, len(v), zlib.crc32(v), WHEN), v) for k, v in records.items()])


def fed_in_pieces(archive: bytes, cuts: list[int], path: Path) -> ZipStream:
    """The archive written to ``path`` and fed to a ZipStream in the pieces ``cuts`` makes."""
    path.write_bytes(archive)
    stream = ZipStream()
    bounds = [0, *sorted(c % (len(archive) + 1) for c in cuts), len(archive)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        stream.feed(archive[a:b])
    assert stream.pos == len(archive)
    return stream


def zipfile_accepts(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


records_st = st.dictionaries(
    st.text("abcé!-_.", min_size=1, max_size=12), st.binary(max_size=3000), min_size=0, max_size=6
)


@given(records=records_st, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_an_intact_archive_passes_in_any_pieces(tmp_path_factory: pytest.TempPathFactory,
                                                records: dict[str, bytes], cuts: list[int]) -> None:
    path = tmp_path_factory.mktemp("z") / "a.zip"
    stream = fed_in_pieces(openkvs_zip(records), cuts, path)
    assert stream.check(path) == len(records)
    assert not stream.gave_up or not records  # openkvs's archives are followed, not read again


@given(records=records_st.filter(lambda r: any(r.values())), seed=st.integers(), cuts=st.lists(st.integers(), max_size=6))
def test_a_changed_data_byte_fails_like_zipfile(tmp_path_factory: pytest.TempPathFactory, records: dict[str, bytes],
                                                seed: int, cuts: list[int]) -> None:
    rng = random.Random(seed)
    archive = bytearray(openkvs_zip(records))
    key = rng.choice([k for k, v in records.items() if v])
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        offset = z.getinfo(key).header_offset
    at = offset + 30 + len(key.encode()) + 9 + rng.randrange(len(records[key]))  # 9: the timestamp extra field
    archive[at] ^= 1 << rng.randrange(8)
    path = Path(tmp_path_factory.mktemp("z") / "a.zip")
    stream = fed_in_pieces(bytes(archive), cuts, path)
    assert not zipfile_accepts(path)
    with pytest.raises(zipfile.BadZipFile):
        stream.check(path)


def test_the_head_of_one_archive_and_the_tail_of_another_fail(tmp_path: Path) -> None:
    """What a resume without If-Range makes: a record rewritten at the same size between the two halves."""
    before = openkvs_zip({"a": b"a" * 5000, "b": b"b" * 5000})
    after = openkvs_zip({"a": b"A" * 5000, "b": b"b" * 5000})
    assert len(before) == len(after)
    stream = fed_in_pieces(before[:3000] + after[3000:], [1000, 2000], tmp_path / "mixed.zip")
    with pytest.raises(zipfile.BadZipFile):
        stream.check(tmp_path / "mixed.zip")


def test_a_resume_feeds_the_kept_bytes_from_the_file(tmp_path: Path) -> None:
    archive = openkvs_zip({f"k{i}": bytes([i]) * (1000 * i) for i in range(8)})
    part = tmp_path / "a.zip.part"
    part.write_bytes(archive[:12_345])  # an earlier run's bytes
    stream = ZipStream()
    feed_file(stream, part, 12_345)
    with open(part, "ab") as f:
        f.write(archive[12_345:])
    stream.feed(archive[12_345:])
    assert stream.check(part) == 8 and not stream.gave_up


@pytest.mark.parametrize("compression, zip64", [(zipfile.ZIP_STORED, True), (zipfile.ZIP_DEFLATED, False)])
def test_other_writers_archives_are_checked_too(tmp_path: Path, compression: int, zip64: bool) -> None:
    """zipfile's own: ZIP64 sizes in the local header are followed; compressed ones are read again at the end."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in {"x.txt": b"hello " * 500, "dir/y.bin": bytes(range(256)) * 40}.items():
            with z.open(name, "w", force_zip64=zip64) as f:
                f.write(data)
    archive = bytearray(buf.getvalue())
    stream = fed_in_pieces(bytes(archive), [7, 100, 3000], tmp_path / "a.zip")
    assert stream.check(tmp_path / "a.zip") == 2
    assert stream.gave_up == (compression != zipfile.ZIP_STORED)

    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = z.getinfo("dir/y.bin")
    archive[info.header_offset + 30 + len(b"dir/y.bin") + len(info.extra) + 100] ^= 0xFF
    stream = fed_in_pieces(bytes(archive), [50], tmp_path / "b.zip")
    with pytest.raises(zipfile.BadZipFile):
        stream.check(tmp_path / "b.zip")


def _listed(path: Path) -> list[tuple[int, bytes, int, int, int, int]] | None:
    """zipfile's central directory of ``path``: each entry's offset, raw name, sizes, CRC-32 and method (what the
    check holds the bytes that went by to), or None if zipfile can't read it."""
    try:
        with zipfile.ZipFile(path) as z:
            return [(i.header_offset, i.orig_filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437"),
                     i.file_size, i.compress_size, i.CRC, i.compress_type) for i in z.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return None


def test_a_changed_byte_of_the_central_directory_is_never_passed_unless_zipfile_lists_the_same(tmp_path: Path) -> None:
    """The central directory is read by hand (not as zipfile's list of a ZipInfo per entry): every byte of it and
    of the end record flipped in turn, the check passes only an archive whose directory zipfile lists with the same
    entries (the bytes that went by hold their data to those)."""
    archive = openkvs_zip({"a": b"x" * 300, "bé": b"", "c.json": b'{"k": 1}'})
    path = tmp_path / "a.zip"
    path.write_bytes(archive)
    original = _listed(path)
    with zipfile.ZipFile(path) as z:
        directory = z.start_dir
    refused = 0
    for at in range(directory, len(archive)):
        changed = bytearray(archive)
        changed[at] ^= 0x41
        stream = fed_in_pieces(bytes(changed), [], path)
        try:
            assert stream.check(path) == 3
        except zipfile.BadZipFile:
            refused += 1
            continue
        assert _listed(path) == original, at
    assert refused > (len(archive) - directory) // 4  # (names, sizes, CRCs, offsets, signatures, counts)


def test_the_check_of_many_entries_holds_no_object_per_entry(tmp_path: Path) -> None:
    """A million-record store's archive took ~0.5 GB to check as zipfile's list of entries; read by hand, the
    check holds a piece of the directory at a time (Python's allocations measured by tracemalloc)."""
    import tracemalloc

    archive = openkvs_zip({f"k{i}": b"" for i in range(100_000)})
    stream = fed_in_pieces(archive, [], tmp_path / "many.zip")
    tracemalloc.start()
    try:
        assert stream.check(tmp_path / "many.zip") == 100_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # (zipfile's list: ~55 MB for these)
