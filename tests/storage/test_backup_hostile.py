"""``openkvs restore`` and ``openkvs check`` of a backup folder someone else made (attack run): its database names
any path, its blobs/ holds links. Restoring it must not let the new server read or delete a file outside its data
dir, and must not copy what the database doesn't name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openkvs.backup import BackupError, backup, restore
from openkvs.storage.sqlite import SQLiteStorage
from openkvs.storage.sqlite.check import check

from .conftest import Body, chunked
from .test_sqlite import later

pytestmark = pytest.mark.anyio

INLINE = 1024
BIG = b"b" * (INLINE * 3)  # a record in a file


async def _backup(tmp_path: Path) -> Path:
    """A sound backup of a store with one inline record ("small") and one record in a file ("big")."""
    data = tmp_path / "d"
    async with SQLiteStorage(data, inline_max=INLINE, background=False) as st:
        user = await st.create_user("alice")
        store = await st.create_store(user.id, "s", None, "k")
        for key, body in (("small", b"small"), ("big", BIG)):
            await st.put_record(store.id, key, Body(chunked(body, 4096)), "application/octet-stream", None)
    dest = tmp_path / "backup"
    backup(data, dest, echo=lambda _: None)
    return dest


def _sql(folder: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(folder / "openkvs.sqlite3")
    with conn:
        conn.execute(sql, args)
    conn.close()


def _big_path(folder: Path) -> str:
    conn = sqlite3.connect(folder / "openkvs.sqlite3")
    (path,) = conn.execute("SELECT path FROM records WHERE key = 'big'").fetchone()
    conn.close()
    return str(path)


async def test_a_record_path_outside_blobs_is_refused(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    outside = tmp_path / "outside"
    outside.write_bytes(b"s" * len(BIG))  # the size the record says: every other check passes
    for path in (f"{outside}", "../../outside"):
        _sql(src, "UPDATE records SET path = ? WHERE key = 'big'", path)
        problems, _ = check(src)
        assert any("is not one openkvs makes" in p for p in problems), problems
        with pytest.raises(BackupError, match="not one openkvs makes"):
            restore(src, tmp_path / "restored")
        assert not (tmp_path / "restored" / "openkvs.sqlite3").exists()


async def test_a_garbage_row_of_the_backup_never_deletes_a_file(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("mine")
    _sql(src, "INSERT INTO garbage(path, created_at, store_id) VALUES (?, 0, NULL)", str(victim))
    problems, _ = check(src)
    assert any("garbage row" in p for p in problems), problems
    with pytest.raises(BackupError, match="garbage collection would delete it"):
        restore(src, tmp_path / "restored")
    # and a data dir that has such a row anyway (a restore by an older openkvs): collected without the unlink
    async with SQLiteStorage(src, inline_max=INLINE, background=False) as st:
        assert await st.collect_garbage(now=later(3600)) == 1
    assert victim.read_text() == "mine"


async def test_a_record_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * len(BIG))
    file = src / "blobs" / _big_path(src)
    file.unlink()
    file.symlink_to(secret)  # the right size, through a link
    problems, _ = check(src)
    assert any("not a regular file" in p for p in problems), problems
    with pytest.raises(BackupError, match="not a regular file"):
        restore(src, tmp_path / "restored")


async def test_restore_copies_only_the_files_the_database_names(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "private").write_text("not the backup's")
    (src / "blobs" / "zz").symlink_to(elsewhere)  # copytree followed it
    (src / "blobs" / "stray").write_text("no record names it")
    restore(src, tmp_path / "restored")
    copied = {str(p.relative_to(tmp_path / "restored" / "blobs")) for p in (tmp_path / "restored" / "blobs").rglob("*")}
    path = _big_path(src)
    assert copied == {path, path[:2], path[:5]}
    assert (tmp_path / "restored" / "blobs" / path).read_bytes() == BIG


async def test_check_names_a_key_openkvs_would_refuse(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    _sql(src, "UPDATE records SET key = ? WHERE key = 'small'", "../../evil")  # a ZIP entry's name
    _sql(src, "UPDATE records SET zip_head = NULL")
    problems, _ = check(src)
    assert any("is no file name" in p for p in problems), problems


async def test_a_trigger_of_the_backup_is_refused(tmp_path: Path) -> None:
    src = await _backup(tmp_path)
    # every store made from now on shared with the backup's author, and nothing else shows it
    _sql(src, "CREATE TRIGGER stores_new AFTER INSERT ON stores BEGIN "
              "INSERT INTO grants(store_id, user_id, can_write) SELECT NEW.id, id, 1 FROM users LIMIT 1; END")
    problems, _ = check(src)
    assert any("trigger 'stores_new'" in p for p in problems), problems
    with pytest.raises(BackupError, match="not one openkvs makes"):
        restore(src, tmp_path / "restored")


async def test_the_triggers_of_an_upgraded_database_are_openkvs_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "openkvs.sqlite3")
    conn.executescript((Path(__file__).parent / "data" / "sqlite-tables-v2.sql").read_text())
    conn.executescript("PRAGMA journal_mode = WAL; PRAGMA user_version = 2;")
    conn.close()
    async with SQLiteStorage(data, background=False):
        pass  # upgraded to this version
    assert check(data)[0] == []


@pytest.mark.parametrize("linked", ["first", "second"])
async def test_a_record_file_reached_through_a_linked_folder_is_refused(tmp_path: Path, linked: str) -> None:
    """A path of blobs/'s layout whose folder is a link: ``blobs/ab/cd -> /etc`` and a record at ``ab/cd/passwd``
    (its size and CRC set to the file's) passed check, and restore copied /etc/passwd in as the record's bytes, for
    the restored server to serve to whoever may read the store. O_NOFOLLOW and lstat only see the last step."""
    src = await _backup(tmp_path)
    outside = tmp_path / "outside"
    (outside / "cd").mkdir(parents=True)
    (outside / "cd" / "passwd").write_bytes(b"s" * len(BIG))  # the size the record says
    (outside / "passwd").write_bytes(b"s" * len(BIG))
    (src / "blobs" / _big_path(src)).unlink()
    (src / "blobs" / "ab").mkdir()
    if linked == "first":
        (src / "blobs" / "zz").symlink_to(outside)  # blobs/zz -> outside: zz/cd/passwd is outside/cd/passwd
        _sql(src, "UPDATE records SET path = 'zz/cd/passwd' WHERE key = 'big'")
    else:
        (src / "blobs" / "ab" / "cd").symlink_to(outside)  # blobs/ab/cd -> outside: ab/cd/passwd
        _sql(src, "UPDATE records SET path = 'ab/cd/passwd' WHERE key = 'big'")
    problems, _ = check(src)
    assert any("through a link" in p for p in problems), problems
    with pytest.raises(BackupError, match="through a link"):
        restore(src, tmp_path / "restored")
    assert not list((tmp_path / "restored").rglob("passwd"))


async def test_restore_refuses_a_backup_whose_blobs_folder_is_a_link(tmp_path: Path) -> None:
    """blobs/ itself a link (to a folder of blobs/'s layout elsewhere): check lets a live data dir keep its blobs/
    on another disk that way, but restore copies nothing through it."""
    src = await _backup(tmp_path)
    moved = tmp_path / "elsewhere"
    (src / "blobs").rename(moved)
    (src / "blobs").symlink_to(moved)
    assert check(src)[0] == []
    with pytest.raises(BackupError, match="through a link"):
        restore(src, tmp_path / "restored")


async def _data(tmp_path: Path) -> Path:
    data = tmp_path / "d"
    async with SQLiteStorage(data, inline_max=INLINE, background=False) as st:
        user = await st.create_user("alice")
        store = await st.create_store(user.id, "s", None, "k")
        await st.put_record(store.id, "big", Body(chunked(BIG, 4096)), "application/octet-stream", None)
    return data


@pytest.mark.parametrize("target", ["folder", "missing"])
async def test_backup_never_writes_through_a_link_at_dest_partial(tmp_path: Path, target: str) -> None:
    """``DEST.partial`` planted as a link (to a folder someone reads, or to a path not yet made): the backup was
    written into the link's target (rmtree ignored the link, mkdir went through it). Refused; nothing written."""
    data = await _data(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    if target == "folder":
        elsewhere.mkdir()
    dest = tmp_path / "backup"
    (tmp_path / "backup.partial").symlink_to(elsewhere)
    with pytest.raises(BackupError, match="backup.partial is a link"):
        backup(data, dest, echo=lambda _: None)
    assert (tmp_path / "backup.partial").is_symlink()
    assert not dest.exists()
    assert (list(elsewhere.iterdir()) == []) if target == "folder" else not elsewhere.exists()


async def test_backup_keeps_a_dest_partial_it_did_not_make(tmp_path: Path) -> None:
    data = await _data(tmp_path)
    for name, make in (("file", lambda p: p.write_text("mine")),
                       ("folder", lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")))):
        dest = tmp_path / name
        partial = tmp_path / f"{name}.partial"
        make(partial)
        with pytest.raises(BackupError, match="not a (folder|backup this command began)"):
            backup(data, dest, echo=lambda _: None)
        assert (partial.read_text() if name == "file" else (partial / "notes.txt").read_text()) == "mine"


async def test_backup_replaces_the_partial_a_failed_backup_left(tmp_path: Path) -> None:
    data = await _data(tmp_path)
    dest = tmp_path / "backup"
    partial = tmp_path / "backup.partial"
    (partial / "blobs" / "ab").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    (partial / "blobs" / "ab" / "cd").symlink_to(outside)  # removed as a link, not followed
    (partial / "openkvs.sqlite3").write_bytes(b"half a copy")
    backup(data, dest, echo=lambda _: None)
    assert not partial.exists() and check(dest)[0] == []
    assert (outside / "keep").read_text() == "mine"


async def test_backup_refuses_a_dest_that_is_a_link(tmp_path: Path) -> None:
    """DEST planted as a link to an empty folder (its owner's, in a shared backups folder): the backup went into
    that folder. Refused, as a link at DEST.partial is; the folders above DEST may be links."""
    data = await _data(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "backup").symlink_to(elsewhere)
    with pytest.raises(BackupError, match="backup is a link"):
        backup(data, tmp_path / "backup", echo=lambda _: None)
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "backup.partial").exists()
    (tmp_path / "linked").symlink_to(tmp_path)
    backup(data, tmp_path / "linked" / "fine", echo=lambda _: None)
    assert check(tmp_path / "fine")[0] == []
