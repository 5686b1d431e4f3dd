"""The local storage layout of Crawlee and the Apify CLI (key-value stores), read by ``openkvs import`` and written
by ``openkvs export``, as Crawlee's ``FileSystemStorageClient`` (crawlee 1.x) lays it out:

    storage/key_value_stores/<store name, or "default">/
        __metadata__.json                 {"id", "name", "accessed_at", "created_at", "modified_at"}
        <key, percent-encoded>            the record's bytes (no extension: Crawlee finds a record by this name)
        <key, percent-encoded>.__metadata__.json    {"key", "content_type", "size"}

JSON written as Crawlee writes it (2-space indent, non-ASCII as is, no final newline), so that an export of an
import gives the same bytes. Older layouts are read too: ``contentType`` instead of ``content_type``, and a value
file named ``<key>.<extension>``; a file with no metadata at all (an ``INPUT.json`` put there by hand) becomes the
record named by its file name without the extension, typed by that extension.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from openkvs import rules
from openkvs.client.http import (
    RETRIES,
    ClientError,
    explain,
    gave_up,
    record_path,
    request,
    resource,
    retryable,
    store_path,
    wait_time,
)
from openkvs.client.localfiles import (
    DEFAULT_STORE,
    METADATA,
    crawlee_json,
    crawlee_time,
    export_folder,
    local_name,
    metadata,
    new_folder,
    put_in_place,
    queue_order,
    read_bounded,
    refuse_links,
    replacing,
    write,
)
from openkvs.client.progress import Progress
from openkvs.client.upload import CHUNK, Item, Summary, content_type, existing_sizes

SUBDIR = "key_value_stores"
MAX_METADATA_FILE = 1 << 20  # a record's {"key", "content_type", "size"}: a key is at most 256 characters


@dataclass
class LocalStore:
    name: str
    folder: Path
    items: list[Item]


def find_stores(path: Path) -> list[LocalStore]:
    """PATH is a storage folder (holding key_value_stores/), that key_value_stores/ folder, or one store's."""
    if (path / SUBDIR).is_dir():
        path = path / SUBDIR
    if (path / METADATA).is_file() or any(p.name.endswith("." + METADATA) for p in _files(path)):
        folders = [path]
    elif path.is_dir():  # a folder of stores' folders: a file beside them is in no store, and would be left out
        entries = sorted(path.iterdir())
        refuse_links(path, entries)
        folders = [p for p in entries if p.is_dir()]
        if loose := [p.name for p in entries if not p.is_dir()]:
            shown = "\n  ".join(loose[:50]) + (f"\n  ... and {len(loose) - 50} more" if len(loose) > 50 else "")
            raise ClientError(
                f"{path}: files in no store's folder (nothing was imported):\n  {shown}\nimport reads Crawlee's "
                "storage folder (key_value_stores/, datasets/, request_queues/), one of those, or one store's, "
                "dataset's or queue's folder (a store's has __metadata__.json); 'openkvs upload DIR STORE' "
                "uploads any folder's files"
            )
    else:
        raise ClientError(f"{path} is not a folder")
    stores = [read_store(f) for f in folders]
    if not stores:
        raise ClientError(f"no key-value stores in {path} (expected storage/{SUBDIR}/<name>/)")
    return stores


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()) if folder.is_dir() else []


def read_store(folder: Path) -> LocalStore:
    found = sorted(folder.iterdir())
    refuse_links(folder, found)  # (first: __metadata__.json -> /dev/zero was read, and filled the memory)
    name = local_name(folder, metadata(folder))
    # (Crawlee's temporary files end in ".tmp"; an interrupted export's hold a "~")
    files = [p for p in _files(folder) if p.name != METADATA and not p.name.endswith(".tmp") and "~" not in p.name]
    claimed: set[Path] = set()
    items: list[Item] = []
    # a folder in a store's is none of its records (Crawlee writes none): named, not left out without a word
    problems = [f"{p}: a folder (a store's records are the files directly in its folder)" for p in found
                if p.is_dir() and "~" not in p.name]
    for meta in (p for p in files if p.name.endswith("." + METADATA)):
        claimed.add(meta)
        stem = meta.name[: -len("." + METADATA)]
        try:
            m = json.loads(read_bounded(meta, MAX_METADATA_FILE))
            key, ctype = m["key"], m.get("content_type") or m.get("contentType")
        except ClientError as exc:  # (it names the file)
            problems.append(str(exc))
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{meta}: {exc}")
            continue
        if not isinstance(key, str) or not isinstance(ctype, (str, type(None))):
            problems.append(f"{meta}: the key must be a string, and the content type a string or null")
            continue
        value = folder / stem
        if not value.is_file():  # older layout: the value file has an extension
            found = [p for p in files if p.name.startswith(stem + ".") and p not in claimed and p != meta
                     and not p.name.endswith("." + METADATA)]
            value = found[0] if len(found) == 1 else value
        if not value.is_file():
            problems.append(f"{meta}: no value file {stem}")
            continue
        claimed.add(value)
        items.append(Item(value, key, value.stat().st_size, ctype or content_type(value)))
    for p in files:
        if p not in claimed and not p.name.endswith("." + METADATA):
            key = unquote(p.stem if "." in p.name else p.name)
            items.append(Item(p, key, p.stat().st_size, content_type(p)))
    problems += [f"{item.path.name}: the key {item.key!r} is not one a record can have (at most 256 letters, digits "
                 "and !_.'()-)" for item in items if not rules.RECORD_KEY.ok(item.key)]
    sources: dict[str, list[str]] = {}
    for item in items:
        sources.setdefault(item.key, []).append(item.path.name)
    problems += [f"two files give the key {k!r}: {', '.join(names)}" for k, names in sources.items() if len(names) > 1]
    if problems:
        raise ClientError(f"{folder}: records that can't be read:\n  " + "\n  ".join(problems[:50]))
    return LocalStore(name, folder, sorted(items, key=lambda i: i.key))


def _fetch(client: httpx.Client, path: str, what: str, out: Path, bar: Progress) -> tuple[str, int]:
    """A record's bytes streamed into ``out`` (through a temporary file: whole or not at all), retried as
    ``request`` retries; its content type and size."""
    for attempt in range(RETRIES + 1):
        written = 0
        response = None
        try:
            with client.stream("GET", path, headers={"Accept-Encoding": "identity"}) as r:
                response = r
                if r.status_code == 200:
                    with replacing(out) as f:  # (a failed attempt leaves no temporary file behind)
                        for data in r.iter_raw(CHUNK):
                            f.write(data)
                            written += len(data)
                            bar.advance(len(data))
                    return r.headers.get("content-type", "application/octet-stream"), written
                if not retryable(r.status_code) or attempt == RETRIES:
                    raise explain(r, what)
        except httpx.TransportError as exc:
            bar.advance(-written)  # this attempt's bytes come again
            if (error := gave_up(what, client, exc, attempt + 1)) is not None:
                raise error from None
        time.sleep(wait_time(response, attempt))
    raise AssertionError("unreachable")


def export(
    client: httpx.Client,
    store: str,
    root: Path,
    *,
    jobs: int = 8,
    progress: Callable[[str, int | None, int], Progress] = Progress,
) -> tuple[Path, Summary]:
    """STORE into ``root/key_value_stores/<name>/``: every record's bytes and type, and the store's metadata. As a
    dataset's or queue's export: into ``<name>~partial`` first, in place when every record was tried (the failed
    ones named), and refused where ``<name>`` holds files already (mixed with the export's, Crawlee and an import
    would read them as the store's); the orders of queues exported into DIR before, in the default store's folder
    (the one place crawlee 1.x reads them from), are kept."""
    info = resource(request(client, "GET", store_path(store), f"store {store}"), f"store {store}")
    name = info.get("name") or info["id"]
    if not isinstance(name, str) or not rules.STORE_NAME.ok(name):  # (it names the folder written)
        raise ClientError(f"store {store}: the server named it {name!r}, not a store name: nothing was written")
    # Crawlee's default store holds the order of the queues exported into this DIR (localqueue.py): kept
    keep = queue_order if name == DEFAULT_STORE else None
    partial, folder = new_folder(export_folder(root, SUBDIR), name, keep)
    sizes = existing_sizes(client, store, "")
    bar = progress(name, sum(sizes.values()), 0)
    summary, lock = Summary(), threading.Lock()

    def one(key: str) -> None:
        if not rules.RECORD_KEY.ok(key):  # ("." and ".." would name the folder or its parent, "" the folder)
            with lock:
                summary.failed.append(f"{key!r}: not a record key (1-256 letters, digits and !_.'()-, not . or ..): "
                                      "the server sent a key no record can have")
            return
        if key == METADATA or key.endswith("." + METADATA):
            with lock:  # (its file would overwrite a record's metadata, and name another record when imported)
                summary.failed.append(f"{key}: its file would be a metadata file of Crawlee's layout")
            return
        try:
            path = partial / quote(key, safe="")
            ctype, size = _fetch(client, record_path(store, key), f"record {key}", path, bar)
            meta = {"key": key, "content_type": ctype, "size": size}
            write(path.with_name(f"{path.name}.{METADATA}"), crawlee_json(meta).encode())
            with lock:
                summary.uploaded += 1
                summary.uploaded_bytes += size
        except (ClientError, OSError) as exc:
            with lock:
                summary.failed.append(f"{key}: {exc}")

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for _ in pool.map(one, sorted(sizes)):
                pass
    finally:
        bar.close()
    meta = {"id": info["id"], "name": info.get("name"),
            "accessed_at": crawlee_time(info.get("accessedAt")), "created_at": crawlee_time(info.get("createdAt")),
            "modified_at": crawlee_time(info.get("modifiedAt"))}
    write(partial / METADATA, crawlee_json(meta).encode())
    put_in_place(partial, folder, keep)
    return folder, summary
