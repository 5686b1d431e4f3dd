"""Datasets in Crawlee's local storage, read by ``openkvs import`` and written by ``openkvs export --dataset``:

    storage/datasets/<dataset name, or "default">/
        __metadata__.json     {"id", "name", "accessed_at", "created_at", "modified_at", "item_count"}
        000000001.json        the first item (a JSON object), 000000002.json the second, ...

crawlee 1.x (``FileSystemDatasetClient``), crawlee 0.x, the JavaScript Crawlee and the Apify CLI all name item
files this way (the number, zero-padded to 9 digits, from 1); Crawlee reads them in the order of that number.

Import: every item file is read and checked first (a JSON object, its file at most MAX_ITEM_FILE bytes, compact at
most what one push takes), then the items are pushed in order, in batches of at most rules.MAX_JSON_BODY bytes.
A push interrupted by a lost connection or a 5xx is not sent again blindly (the server may have stored it): the
dataset's itemCount says whether it landed. Into a dataset that holds items already, the import resumes only when
those items are the local dataset's first ones (an earlier import of it that stopped midway: the first and the
last of them are compared); anything else is refused unless ``append`` is given, so that a re-run never duplicates.

Export streams the dataset's jsonl export into item files (never the whole dataset in memory), into a folder of its
own that takes its place when complete, and resumes from the last item written when the connection is lost.
"""

from __future__ import annotations

import json
import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from openkvs import rules
from openkvs.client.http import (
    RETRIES,
    BadAnswer,
    ClientError,
    data,
    explain,
    gave_up,
    parsing,
    read_answer,
    request,
    resource,
    retryable,
    wait_time,
)
from openkvs.client.localfiles import (
    METADATA,
    api_path,
    crawlee_json,
    crawlee_time,
    local_name,
    metadata,
    new_folder,
    put_in_place,
    read_bounded,
    refuse_names,
    write,
)
from openkvs.client.progress import Progress
from openkvs.plural import counted

SUBDIR = "datasets"
COLLECTION = "datasets"
ITEM_DIGITS = 9  # crawlee's _ITEM_FILENAME_DIGITS
PUSH_LIMIT = rules.MAX_JSON_BODY  # the decoded body of one push (API-datasets.md 4.4)
MAX_ITEM_FILE = 4 * PUSH_LIMIT  # an item file as Crawlee indents it; compact, the item must fit one push
MAX_NUMBER = 2**63 - 1  # the largest item file number (LocalDataset.numbers holds 64-bit integers)


@dataclass
class LocalDataset:
    """A dataset's folder, read and checked. Its item files are kept as their numbers and their items' sizes (12
    bytes each, not a Path: a million items' files are listed in 12 MB), with the names of those not named as
    Crawlee names them."""

    name: str
    folder: Path
    numbers: array[int]  # the item files' numbers, in the dataset's order
    odd: dict[int, str]  # number -> file name, for names other than "000000001.json"
    sizes: array[int]  # each item's size as compact JSON, what a push carries of it

    def __len__(self) -> int:
        return len(self.numbers)

    def push_bytes(self, start: int = 0) -> int:
        """The bytes the pushes of the items from ``start`` on carry: their bodies' lengths, brackets and commas."""
        return sum(size for _, size in _layout(self, start))

    def file(self, index: int) -> Path:
        n = self.numbers[index]
        return self.folder / self.odd.get(n, _name(n))


def is_dataset(folder: Path) -> bool:
    """A folder whose metadata is a dataset's (it has an item count), wherever it is."""
    meta = metadata(folder)
    return "item_count" in meta or "itemCount" in meta


def _name(number: int) -> str:
    return f"{number:0{ITEM_DIGITS}d}.json"


def _number(name: str) -> int | None:
    """The item number an item file's name gives (ASCII digits: "²" is a digit to str.isdigit, not to int)."""
    stem, dot, ext = name.partition(".")
    return int(stem) if dot and ext == "json" and stem.isascii() and stem.isdigit() else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")  # (NaN and Infinity: the server refuses them too)


def compact(data: bytes) -> tuple[Any, bytes]:
    """An item file's JSON, and that JSON as a push carries it."""
    value = json.loads(data, parse_constant=_reject_constant)
    return value, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _problems(folder: Path, problems: list[str]) -> ClientError:
    shown = "\n  ".join(problems[:50]) + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else "")
    return ClientError(f"{folder}: items that can't be imported (nothing was imported):\n  {shown}")


def read_dataset(folder: Path) -> LocalDataset:
    """The item files of a dataset's folder, each read and checked; a list of what is wrong (nothing sent)."""
    name = local_name(folder, metadata(folder))
    numbers: list[int] = []
    odd: dict[int, str] = {}
    links: list[str] = []
    problems: list[str] = []
    with os.scandir(folder) as found:
        for entry in found:
            if entry.is_symlink():
                links.append(entry.name)
            # (Crawlee's temporary files end in ".tmp"; an interrupted export's folder holds a "~")
            elif entry.name != METADATA and entry.name.endswith(".json") and "~" not in entry.name:
                number = _number(entry.name)
                if number is None or not entry.is_file(follow_symlinks=False):
                    problems.append(f"{entry.name}: not an item file (Crawlee names them 000000001.json, "
                                    "000000002.json, ...)")
                    continue
                if number > MAX_NUMBER:
                    problems.append(f"{entry.name}: item number over {MAX_NUMBER:,}")
                    continue
                numbers.append(number)
                if entry.name != _name(number):
                    odd[number] = entry.name
    refuse_names(folder, sorted(links))
    numbers.sort()
    problems += [f"two files of item {a} (000000001.json and 1.json are both item 1)"
                 for a, b in zip(numbers, numbers[1:], strict=False) if a == b]
    local = LocalDataset(name, folder, array("q", numbers), odd, array("I", [0]) * len(numbers))
    del numbers
    for index in range(len(local)):
        path = local.file(index)
        try:
            value, body = compact(read_bounded(path, MAX_ITEM_FILE))
        except ClientError as exc:
            problems.append(f"{path.name}: {str(exc).removeprefix(f'{path}: ')}")
            continue
        except ValueError as exc:  # (UnicodeDecodeError too)
            problems.append(f"{path.name}: not JSON ({exc})")
            continue
        except RecursionError:
            problems.append(f"{path.name}: JSON nested too deeply")
            continue
        if not isinstance(value, dict):
            problems.append(f"{path.name}: not a JSON object (a dataset's items are objects)")
        elif len(body) + 2 > PUSH_LIMIT:
            problems.append(f"{path.name}: {len(body):,} bytes as compact JSON, over the {PUSH_LIMIT - 2:,} one "
                            "push takes")
        else:
            local.sizes[index] = len(body)
    if problems:
        raise _problems(folder, sorted(problems))
    return local


@dataclass
class Pushed:
    items: int = 0
    bytes: int = 0
    kept: int = 0  # items the target held already from an earlier import (resumed after them)
    already: bool = False  # every item was there: nothing to push

    def line(self) -> str:
        if self.already:
            return f"all {counted(self.kept, 'item')} there already, nothing pushed"
        text = f"pushed {counted(self.items, 'item')} ({counted(self.bytes, 'byte')})"
        return text + (f" after the {self.kept} an earlier import pushed" if self.kept else "")


def _item_at(client: httpx.Client, target: str, index: int) -> Any:
    what = f"reading item {index} of {target}"
    r = request(client, "GET", api_path(COLLECTION, target) + "/items", what,
                params={"format": "json", "offset": index, "limit": 1})
    with parsing(what):
        items = json.loads(r.content)
    return items[0] if isinstance(items, list) and items else None


def _local_item(local: LocalDataset, index: int) -> Any:
    return compact(read_bounded(local.file(index), MAX_ITEM_FILE))[0]


def _resume_at(client: httpx.Client, local: LocalDataset, target: str, count: int) -> int:
    """Where an import of ``local`` into ``target`` (holding ``count`` items) starts: after the items an earlier
    import pushed, when the target's first and last items are the local ones at those places."""
    if count == 0:
        return 0
    if count <= len(local) and all(
        _item_at(client, target, i) == _local_item(local, i) for i in sorted({0, count - 1})
    ):
        return count
    raise ClientError(
        f"{local.folder} -> {target}: {target} holds {counted(count, 'item')} that are not the first of "
        f"{local.folder.name}'s {len(local)}: nothing was pushed (--append adds them after those items, "
        "or import into another dataset with --store ~NAME)"
    )


def _layout(local: LocalDataset, start: int) -> Iterator[tuple[int, int]]:
    """How the items from ``start`` on are pushed: batches of at most PUSH_LIMIT bytes as a JSON array, each as its
    item count and its body's length."""
    n = 0
    size = 1  # "[", then each item with the "," or "]" after it
    for index in range(start, len(local)):
        item = local.sizes[index] + 1
        if n and size + item > PUSH_LIMIT:
            yield n, size
            n, size = 0, 1
        n += 1
        size += item
    if n:
        yield n, size


def _batches(local: LocalDataset, start: int) -> Iterator[tuple[bytes, int]]:
    """The items from ``start`` on as push bodies, as ``_layout`` has them, each with its item count."""
    index = start
    for n, _ in _layout(local, start):
        parts = [compact(read_bounded(local.file(i), MAX_ITEM_FILE))[1] for i in range(index, index + n)]
        index += n
        yield b"[" + b",".join(parts) + b"]", n


def _count(client: httpx.Client, target: str) -> int:
    what = f"dataset {target}"
    return item_count(data(request(client, "GET", api_path(COLLECTION, target), what), what), what)


def item_count(info: Any, what: str) -> int:
    with parsing(what):
        count = info["itemCount"]
        if type(count) is not int or count < 0:
            raise BadAnswer(what, f"itemCount {count!r}")
        return count


def _push(client: httpx.Client, target: str, body: bytes, n: int, before: int, sleep: Callable[[float], None]) -> None:
    """One push of ``n`` items onto a dataset of ``before`` items. After a lost answer (a dropped connection, a 5xx)
    the push may have been stored: the item count tells, and it is sent again only when it was not."""
    what = f"pushing {counted(n, 'item')} to {target}"
    for attempt in range(RETRIES + 1):
        response = None
        try:
            with client.stream("POST", api_path(COLLECTION, target) + "/items", content=body,
                               headers={"Content-Type": "application/json"}) as response:
                if response.status_code == 201:
                    read_answer(response, what)
                    return
                if not retryable(response.status_code) or attempt == RETRIES:
                    raise explain(response, what)
        except httpx.TransportError as exc:
            if (error := gave_up(what, client, exc, attempt + 1)) is not None:
                raise error from None
        sleep(wait_time(response, attempt))
        now = _count(client, target)
        if now == before + n:
            return
        if now != before:
            raise ClientError(f"{what}: the dataset went from {before} to {now} items meanwhile (is something else "
                              "pushing to it?)")
    raise AssertionError("unreachable")


def import_dataset(
    client: httpx.Client,
    local: LocalDataset,
    target: str,
    count: int,
    *,
    append: bool = False,
    progress: Callable[[str, int | None, int], Progress] = Progress,
    sleep: Callable[[float], None] = time.sleep,
) -> Pushed:
    """``local``'s items pushed onto ``target`` (which holds ``count`` items): all of them after those with
    ``append``, else those an earlier import did not push (see the module's docstring)."""
    start = 0 if append else _resume_at(client, local, target, count)
    done = Pushed(kept=start, already=len(local) > 0 and start == len(local))
    if done.already:
        return done
    bar = progress(local.name, local.push_bytes(start), 0)
    at = count
    try:
        for body, n in _batches(local, start):
            _push(client, target, body, n, at, sleep)
            at += n
            done.items += n
            done.bytes += len(body)
            bar.advance(len(body))
    except (ClientError, OSError) as exc:
        how = ("running it again appends them all again" if append
               else "run the same command again to push the rest")
        raise ClientError(f"{local.folder} -> {target}: {exc}; {start + done.items} of {len(local)} items "
                          f"are in {target} ({how})") from None
    finally:
        bar.close()
    return done


def _lines(client: httpx.Client, target: str, total: int, bar: Progress) -> Iterator[bytes]:
    """The dataset's items from its jsonl export, one line each, the first ``total``; a lost connection is taken
    up again from the next item (split on b"\\n" alone: a JSON text holds no raw newline, but may hold U+2028,
    which a text line splitter would cut at). A line over MAX_ITEM_FILE bytes, or more than ``total`` lines, is the
    server's error."""
    what = f"exporting {target}"
    done = failures = 0
    while done < total:
        try:
            params: dict[str, str | int] = {"format": "jsonl", "offset": done, "limit": total - done}
            with client.stream("GET", api_path(COLLECTION, target) + "/items", params=params) as r:
                if r.status_code != 200:
                    if not retryable(r.status_code) or failures >= 6:
                        raise explain(r, what)
                    failures += 1
                    time.sleep(wait_time(r, failures))
                    continue
                rest = bytearray()  # the line begun: no b"\n" in it
                for chunk in r.iter_bytes():
                    bar.advance(len(chunk))
                    at = len(rest)
                    rest += chunk
                    begin = 0
                    while (end := rest.find(b"\n", at)) >= 0:
                        line = bytes(rest[begin:end])
                        begin = at = end + 1
                        if line.strip():
                            if done == total:
                                raise BadAnswer(what, f"more than the {total} items the dataset holds")
                            failures = 0
                            done += 1
                            yield line
                    del rest[:begin]
                    if len(rest) > MAX_ITEM_FILE:
                        raise BadAnswer(what, f"item {done + 1} is over {MAX_ITEM_FILE:,} bytes")
            if bytes(rest).strip():
                if done == total:
                    raise BadAnswer(what, f"more than the {total} items the dataset holds")
                done += 1
                yield bytes(rest)
            if done < total:  # (the dataset shrank: it was deleted and made again meanwhile)
                raise ClientError(f"{what}: {total} items expected, {done} came")
        except httpx.TransportError as exc:
            failures += 1
            if (error := gave_up(what, client, exc, failures)) is not None:
                raise error from None
            time.sleep(wait_time(None, failures))


def export_dataset(
    client: httpx.Client,
    target: str,
    root: Path,
    *,
    progress: Callable[[str, int | None, int], Progress] = Progress,
) -> tuple[Path, int]:
    """TARGET into ``root/datasets/<name>/``: its items as they are at the start, and its metadata."""
    what = f"dataset {target}"
    info = resource(request(client, "GET", api_path(COLLECTION, target), what), what)
    name = info.get("name") or info["id"]
    if not isinstance(name, str) or not rules.STORE_NAME.ok(name):  # (it names the folder written)
        raise ClientError(f"dataset {target}: the server named it {name!r}, not a dataset name: nothing was written")
    total = item_count(info, what)
    partial, final = new_folder(root / SUBDIR, name)
    bar = progress(name, None, 0)
    written = 0
    try:
        for line in _lines(client, target, total, bar):
            written += 1
            with parsing(f"exporting {target}: item {written}"):
                text = crawlee_json(json.loads(line))
            (partial / f"{written:0{ITEM_DIGITS}d}.json").write_text(text, "utf-8")
    finally:
        bar.close()
    with parsing(what):
        meta = {"id": info["id"], "name": info.get("name"), "accessed_at": crawlee_time(info.get("accessedAt")),
                "created_at": crawlee_time(info.get("createdAt")), "modified_at": crawlee_time(info.get("modifiedAt")),
                "item_count": written}
    write(partial / METADATA, crawlee_json(meta).encode())
    put_in_place(partial, final)
    return final, written
