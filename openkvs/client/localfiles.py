"""What the three kinds of Crawlee's local storage share (``storage/key_value_stores/``, ``datasets/`` and
``request_queues/``, one folder per store, dataset or queue, each with its ``__metadata__.json``): finding the
folders a PATH names, reading a file safely, and writing files as Crawlee writes them.

Safety, for a storage folder from someone else (an archive unpacked): symbolic links are refused, not followed
(Crawlee writes none; one may point at ~/.ssh/id_rsa, which would be sent); a file is read only up to a bound (a
2 GB "item" is refused by its size, before it is read); a name that is not a valid storage name is refused rather
than sent. Every check runs before anything is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from openkvs import rules
from openkvs.client.http import ClientError, request, resource

METADATA = "__metadata__.json"
KINDS = ("key_value_stores", "datasets", "request_queues")  # the subfolders of a storage folder, one per kind


def crawlee_json(value: object) -> str:
    """JSON as Crawlee writes it (crawlee/_utils/file.py json_dumps: 2-space indent, non-ASCII as is, no final
    newline), so that an export of an import gives the same bytes."""
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def crawlee_time(iso: str | None) -> str:
    """The API's ISO time as Crawlee writes datetimes (``str(datetime)``)."""
    if not iso:
        return str(datetime.now().astimezone())
    return str(datetime.fromisoformat(iso.replace("Z", "+00:00")))


def refuse_links(folder: Path, entries: list[Path]) -> None:
    """Symbolic links in a storage folder are not followed (see the module's docstring)."""
    refuse_names(folder, [p.name for p in entries if p.is_symlink()])


def refuse_names(folder: Path, links: list[str]) -> None:
    """The links (their names) found in ``folder``, refused."""
    if links:
        shown = "\n  ".join(links[:50])
        raise ClientError(f"{folder}: symbolic links, not followed (nothing was imported):\n  {shown}")


def entries(folder: Path) -> list[Path]:
    """A folder's entries in name order, none of them a link."""
    found = sorted(folder.iterdir())
    refuse_links(folder, found)
    return found


def kind_of(path: Path) -> str | None:
    """Which kind a folder PATH names by its place: a storage folder's ``datasets/`` (``"datasets"``) or one folder
    in it (``.../datasets/NAME``); None when neither it nor its parent is named for a kind."""
    for name in (path.name, path.parent.name):
        if name in KINDS:
            return name
    return None


def metadata(folder: Path) -> dict[str, Any]:
    """The folder's ``__metadata__.json`` as an object; {} when there is none or it is not one."""
    try:
        value = json.loads(read_bounded(folder / METADATA, 1 << 20))
    except (OSError, ValueError, ClientError):
        return {}
    return value if isinstance(value, dict) else {}


def local_name(folder: Path, meta: dict[str, Any]) -> str:
    """The name a local store, dataset or queue goes into: its metadata's, else its folder's ("default" for the
    unnamed one Crawlee opens by default). Checked by check_name before anything is sent under it."""
    name = meta.get("name") or folder.name
    return name if isinstance(name, str) else repr(name)


def check_name(folder: Path, name: str, what: str) -> None:
    if not rules.STORE_NAME.ok(name):
        raise ClientError(f"{folder}: {name!r} is not a {what} name (1-63 letters, digits and '-'): nothing was "
                          f"imported; give one with --store ~NAME")


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refused past ``limit`` (by its size first, then while reading: a file that grows)
    and when it is a link (opened without following one, in case it became one since it was listed) or anything
    but a regular file (opened without blocking: a FIFO put in its place would hold the open for ever)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ClientError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise ClientError(f"{path}: {info.st_size:,} bytes, over the {limit:,} such a file may have")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ClientError(f"{path}: over the {limit:,} bytes such a file may have")
    return data


def temporary(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a "~" no key's file name has (keys never hold
    one), so that no record's file is another's temporary one ("x.tmp" was the record "x"'s)."""
    return path.with_name(f"{path.name}~{os.getpid()}-{threading.get_ident()}")


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # (an open that finds a symbolic link fails instead of following it)


def create(path: Path) -> int:
    """A new file at ``path``, open for writing: one left there (an interrupted export's, or a link put in its
    place) is removed first, never written through."""
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new bytes to: whole or not at all, as Crawlee's atomic_write (a temporary file put
    in place at the end, removed when anything fails)."""
    tmp = temporary(path)
    try:
        with os.fdopen(create(tmp), "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write(path: Path, data: bytes) -> None:
    with replacing(path) as f:
        f.write(data)


def export_folder(root: Path, *names: str) -> Path:
    """``root/names...`` for an export to write in, each folder made when missing. ``root`` (DIR, the user's
    choice) may be a symbolic link; a folder under it that is one is refused, not followed: the export would write
    outside DIR (``DIR/key_value_stores/s1 -> /etc``)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for name in names:
        folder = folder / name
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        refuse_link_folder(folder)
    return folder


def refuse_link_folder(folder: Path) -> None:
    if folder.is_symlink():
        raise ClientError(f"{folder} is a symbolic link: an export writes only inside its folder, nothing was written "
                          "through it")
    if not folder.is_dir():
        raise ClientError(f"{folder} is in the way (not a folder): nothing was written")


DEFAULT_STORE = "default"  # the folder of the key-value store Crawlee opens by default
QUEUE_ORDER = "__RQ_STATE_"  # a queue's order, where crawlee 1.x keeps it: the default store's record of that prefix


def queue_order(name: str) -> bool:
    """A file of a queue's order in the default store's folder (``__RQ_STATE_<id>`` and its metadata file), as an
    export of the queue writes it (localqueue.py): Crawlee reads it from there only, so a store's export merges
    with it."""
    return name.startswith(QUEUE_ORDER)


def new_folder(parent: Path, name: str, keep: Callable[[str], bool] | None = None) -> tuple[Path, Path]:
    """For an export of a store, dataset or queue into ``parent/name``: the folder to fill (``name~partial``, emptied
    first if an interrupted export left it) and where it goes when complete. An existing ``parent/name`` that holds
    anything but its metadata (and regular files whose names ``keep`` takes: put_in_place keeps them) is refused:
    the export would mix with its files, and Crawlee would read both."""
    if parent.is_symlink():  # (DIR/datasets -> elsewhere: the export would write there)
        refuse_link_folder(parent)
    final = parent / name
    if final.is_symlink():
        refuse_link_folder(final)
    if final.exists() and not final.is_dir():
        raise ClientError(f"{final} is in the way (not a folder): nothing was written")
    if final.is_dir() and any(p.name != METADATA and not _kept(p, keep) for p in final.iterdir()):
        raise ClientError(f"{final} holds files already: remove it, or export into another folder")
    partial = parent / f"{name}~partial"
    if partial.is_symlink() or partial.exists() and not partial.is_dir():
        raise ClientError(f"{partial} is in the way (not a folder): nothing was written")
    if partial.is_dir():
        for p in entries(partial):
            p.unlink()
        partial.rmdir()
    partial.mkdir(parents=True)
    return partial, final


def _kept(path: Path, keep: Callable[[str], bool] | None) -> bool:
    return keep is not None and keep(path.name) and path.is_file() and not path.is_symlink()


def put_in_place(partial: Path, final: Path, keep: Callable[[str], bool] | None = None) -> None:
    """The complete export takes the place of ``final`` (which held at most its metadata and the files ``keep``
    takes: new_folder). Those files go into the export first, unless it wrote the same record (a file or its
    metadata file): the export run last wins, as when the files are written into a store's folder exported
    before."""
    if final.is_dir():
        written = {p.name.removesuffix(f".{METADATA}") for p in partial.iterdir()}  # (the export's records)
        for path in sorted(final.iterdir()):
            if _kept(path, keep) and path.name.removesuffix(f".{METADATA}") not in written:
                os.replace(path, partial / path.name)
        (final / METADATA).unlink(missing_ok=True)
        for path in final.iterdir():  # (a kept file the export replaced)
            if _kept(path, keep):
                path.unlink()
        final.rmdir()
    os.replace(partial, final)


def api_path(collection: str, target: str) -> str:
    """``/v2/datasets/~NAME`` and the like: TARGET (an ID, ``~NAME`` or ``USER~NAME``) in one of the API's
    collections (``datasets``, ``request-queues``)."""
    return f"/v2/{collection}/" + quote(target, safe="~")


def open_target(client: httpx.Client, collection: str, what: str, target: str,
                say: Callable[[str], None]) -> dict[str, Any]:
    """The dataset or queue TARGET's object; ``~NAME`` is created when missing (get-or-create by name), any other
    TARGET must exist."""
    owner, tilde, name = target.partition("~")
    if tilde and not owner:
        r = request(client, "POST", f"/v2/{collection}", f"creating {what} {name}", params={"name": name})
        if r.status_code == 201:
            say(f"created {what} {target}")
    else:
        r = request(client, "GET", api_path(collection, target), f"{what} {target}")
    return resource(r, f"{what} {target}")
