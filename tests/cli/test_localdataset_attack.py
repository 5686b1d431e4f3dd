"""openkvs import of datasets and request queues from a storage folder someone else made (an archive unpacked, an
actor's output): links that point out of it, a 2 GB "item", files that are not JSON, names that would leave the
folder or are no dataset's. Each is refused with a message that names it, before anything is sent; nothing outside
the folder is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import run


def _dataset(tmp_path: Path, name: str, items: int = 2) -> Path:
    folder = tmp_path / "storage" / "datasets" / name
    folder.mkdir(parents=True)
    for i in range(1, items + 1):
        (folder / f"{i:09d}.json").write_text(json.dumps({"i": i}))
    return folder


def _queue(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "storage" / "request_queues" / name
    folder.mkdir(parents=True)
    (folder / "__metadata__.json").write_text(json.dumps({"id": "q1", "name": name, "total_request_count": 1}))
    (folder / "aaaaaaaaaaaaaaa.json").write_text(json.dumps({"unique_key": "https://a.example/", "url":
                                                             "https://a.example/", "method": "GET"}))
    return folder


def _nothing_sent(server: Any, *names: str) -> None:
    with server.client() as c:
        for name in names:
            assert c.get(f"/v2/datasets/~{name}").status_code == 404, name
            assert c.get(f"/v2/request-queues/~{name}").status_code == 404, name


def _refused(server: Any, path: Path, *expected: str) -> str:
    out = run(server, "import", str(path), "-q", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


@pytest.mark.parametrize("where", ["item file", "dataset folder", "request file", "queue's state record"])
def test_no_link_is_followed(sqlite_server: Any, tmp_path: Path, where: str) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"unique_key": "s3cr3t", "url": "https://s3cr3t.example/", "password": "s3cr3t"}')
    name = "links-" + where.split()[0].replace("'s", "")
    if where == "item file":
        (_dataset(tmp_path, name) / "000000003.json").symlink_to(secret)
        shown = "000000003.json"
    elif where == "dataset folder":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "000000001.json").write_text('{"a": 1}')
        (tmp_path / "storage" / "datasets").mkdir(parents=True)
        (tmp_path / "storage" / "datasets" / name).symlink_to(tmp_path / "elsewhere")
        shown = name
    elif where == "request file":
        (_queue(tmp_path, name) / "bbbbbbbbbbbbbbb.json").symlink_to(secret)
        shown = "bbbbbbbbbbbbbbb.json"
    else:  # the state record is not followed either: the queue goes in, in the order of its files
        _queue(tmp_path, name)
        kvs = tmp_path / "storage" / "key_value_stores"
        (tmp_path / "elsewhere").mkdir()
        kvs.mkdir(parents=True)
        (kvs / "default").symlink_to(tmp_path / "elsewhere")
        shown = "default"
    _refused(sqlite_server, tmp_path / "storage", "symbolic links, not followed", shown)
    _nothing_sent(sqlite_server, name)


def test_a_huge_item_file_is_refused_by_its_size_unread(sqlite_server: Any, tmp_path: Path) -> None:
    """A 2 GB item file (sparse: no disk taken) is refused by its size: it is never read into memory."""
    folder = _dataset(tmp_path, "huge")
    with open(folder / "000000003.json", "wb") as f:
        f.truncate(2 << 30)
    _refused(sqlite_server, folder, "000000003.json: 2,147,483,648 bytes, over the 37,748,736 such a file may have",
             "nothing was imported")
    _nothing_sent(sqlite_server, "huge")


def test_an_item_over_one_push_is_refused(sqlite_server: Any, tmp_path: Path) -> None:
    folder = _dataset(tmp_path, "toobig")
    (folder / "000000003.json").write_text(json.dumps({"text": "x" * 9_437_184}))
    _refused(sqlite_server, folder, "000000003.json: 9,437,195 bytes as compact JSON, over the 9,437,182 one push "
                                    "takes")
    _nothing_sent(sqlite_server, "toobig")


def test_files_that_are_not_items_or_requests_are_listed(sqlite_server: Any, tmp_path: Path) -> None:
    folder = _dataset(tmp_path, "junk", items=3)
    (folder / "000000001.json").write_text("{not json")
    (folder / "000000002.json").write_text("[1, 2]")
    (folder / "000000003.json").write_bytes(b'{"a": "\xff"}')
    (folder / "000000004.json").write_text('{"n": NaN}')
    (folder / "notes.json").write_text("{}")
    (folder / "README.txt").write_text("not read: Crawlee reads only *.json")
    queue = _queue(tmp_path, "junkq")
    (queue / "ccccccccccccccc.json").write_text('{"unique_key": "", "url": "https://a.example/"}')
    (queue / "ddddddddddddddd.json").write_text('{"url": "https://a.example/"}')
    (queue / "eeeeeeeeeeeeeee.json").write_text("")
    err = _refused(sqlite_server, folder, "000000001.json: not JSON", "000000002.json: not a JSON object",
                   "000000003.json: not JSON", "000000004.json: not JSON", "notes.json: not an item file")
    assert "README" not in err
    _refused(sqlite_server, queue, "ccccccccccccccc.json: not a request (its uniqueKey is not a text",
             "ddddddddddddddd.json: not a request (its uniqueKey", "eeeeeeeeeeeeeee.json: not a request")
    _nothing_sent(sqlite_server, "junk", "junkq")


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/b", "x" * 64, "under_score"])
def test_names_that_are_not_names_are_refused(sqlite_server: Any, tmp_path: Path, name: str) -> None:
    """The name in a dataset's or queue's metadata names what it goes into: one that is not a valid name (one
    that would reach another path of the API) is refused, and --store gives one."""
    folder = _dataset(tmp_path, "fine")
    (folder / "__metadata__.json").write_text(json.dumps({"id": "x", "name": name, "item_count": 2}))
    queue = _queue(tmp_path, "fineq")
    (queue / "__metadata__.json").write_text(json.dumps({"id": "y", "name": name, "total_request_count": 1}))
    _refused(sqlite_server, tmp_path / "storage", f"{name!r} is not a dataset name", "--store ~NAME")
    _refused(sqlite_server, queue, f"{name!r} is not a queue name")
    _nothing_sent(sqlite_server, "fine", "fineq")
    run(sqlite_server, "import", str(folder), "--store", f"~renamed-{len(name)}", "-q")
    with sqlite_server.client() as c:
        assert c.get(f"/v2/datasets/~renamed-{len(name)}").json()["data"]["itemCount"] == 2


def test_a_folder_with_several_and_one_store_option_is_a_usage_error(sqlite_server: Any, tmp_path: Path) -> None:
    _dataset(tmp_path, "one")
    _queue(tmp_path, "two")
    out = run(sqlite_server, "import", str(tmp_path / "storage"), "--store", "~x", check=False)
    assert out.returncode == 2 and "--store names one; " in out.stderr and "holds 2" in out.stderr, out.stderr
    _nothing_sent(sqlite_server, "one", "two", "x")


def test_a_kinds_folder_that_is_a_link_is_refused(sqlite_server: Any, tmp_path: Path) -> None:
    (tmp_path / "elsewhere" / "secrets").mkdir(parents=True)
    (tmp_path / "elsewhere" / "secrets" / "000000001.json").write_text('{"a": 1}')
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "datasets").symlink_to(tmp_path / "elsewhere")
    _refused(sqlite_server, tmp_path / "storage", "symbolic links, not followed", "datasets")
    _nothing_sent(sqlite_server, "secrets")


def test_two_files_of_one_item_are_refused(sqlite_server: Any, tmp_path: Path) -> None:
    """Crawlee orders item files by their number: "7.json" beside "000000007.json" would be taken in either order."""
    folder = _dataset(tmp_path, "twice", items=7)
    (folder / "7.json").write_text('{"other": 7}')
    _refused(sqlite_server, folder, "two files of item 7")
    _nothing_sent(sqlite_server, "twice")
    (folder / "000000007.json").unlink()  # one name or the other: both are item 7
    run(sqlite_server, "import", str(folder), "-q")
    with sqlite_server.client() as c:
        assert c.get("/v2/datasets/~twice/items").json()[-1] == {"other": 7}


def test_a_fifo_put_where_an_item_file_was_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Listed as a file, then swapped for a FIFO before it is read (the folder is someone else's): the open must not
    wait for a writer that never comes."""
    import os
    import threading

    from openkvs.client.http import ClientError
    from openkvs.client.localfiles import read_bounded

    path = tmp_path / "000000001.json"
    os.mkfifo(path)
    got: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(got, read_bounded, path, 1024), daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # (unblock it for the process's sake, then fail)
        with open(path, "wb"):
            pass
        raise AssertionError("read_bounded waited on a FIFO")
    assert isinstance(got[0], ClientError) and "not a regular file" in str(got[0])


def _catch(into: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        into.append(exc)
