"""``openkvs upload`` (and ``import``): files to records, in parallel, each retried on 429, 5xx and lost
connections, and skipped when the store already holds the same bytes.

Keys: a file's path relative to the folder, with ``/`` written as ``!``, after ``--prefix``. Apify's keys allow
only letters, digits and ``!_.'()-`` (at most 256 characters): a file whose key would break that, or two files
whose keys would be the same, stop the upload before anything is sent, and are listed.

Identical: a record of the same size (from the store's key listing) whose CRC-32 (openkvs's record ETag starts
with it; a HEAD) matches the file's. Other servers' ETags don't say: their records are uploaded again.
"""

from __future__ import annotations

import codecs
import io
import mimetypes
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from openkvs import rules
from openkvs.client.http import BadAnswer, ClientError, data, parsing, record_path, request, shown, store_path
from openkvs.client.progress import Progress
from openkvs.client.zipcheck import crc32
from openkvs.plural import counted

SEPARATOR = "!"  # what "/" in a relative path becomes in a key
_OPENKVS_ETAG = re.compile(r'"([0-9a-f]{8})-([0-9a-f]+)-')  # crc32-decodedsize-...: see api/records.py _etag
CHUNK = 1 << 20


@dataclass(frozen=True)
class Item:
    path: Path
    key: str
    size: int
    content_type: str


@dataclass
class Summary:
    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    left_out: int = 0  # upload's symbolic links and other files that are not regular ones (plan)

    def line(self) -> str:
        text = (f"uploaded {counted(self.uploaded, 'file')} ({counted(self.uploaded_bytes, 'byte')}), "
                f"{self.skipped} identical skipped")
        if self.left_out:
            text += f", {counted(self.left_out, 'link or special file', 'links or special files')} left out"
        return text + (f", {len(self.failed)} failed" if self.failed else "")


def content_type(path: Path) -> str:
    guessed, encoding = mimetypes.guess_type(path.name)
    # report.json.gz is gzip bytes, not JSON: the type of what the file holds, not of what it unpacks to
    if guessed is None or encoding:
        return "application/octet-stream"
    # A text file's encoding named when its first bytes are UTF-8: without a charset, a browser opening the record
    # guesses one (windows-1252: "ü" shown as "Ã¼"). The console's uploads do the same.
    if guessed.startswith("text/") and _starts_as_utf8(path):
        return guessed + "; charset=utf-8"
    return guessed


def _starts_as_utf8(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(65536)
        whole = not f.read(1)
    try:  # a character cut by the end of the bytes looked at is fine, by the end of the file it is not
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return False
    return True


def plan(root: Path, prefix: str = "") -> tuple[list[Item], list[str]]:
    """One item per regular file under ``root``, in key order, and the paths (relative to ``root``) of what is left
    out: symbolic links, to files and to folders alike, are not followed (as rsync without -L: a link in the folder
    to ~/.ssh/id_rsa or /etc/passwd would have been uploaded, and a link to a folder above it loops), nor is
    anything but a regular file read (a FIFO, a socket). ``root`` itself, the user's choice, may be a link."""
    if not root.is_dir():
        raise ClientError(f"{root} is not a folder")
    items: list[Item] = []
    bad: list[str] = []
    left_out: list[str] = []
    owner: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):  # (followlinks=False: a link to a folder is listed, not entered)
        for name in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            dirs.remove(name)
            files.append(name)
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            try:
                info = path.lstat()
            except FileNotFoundError:  # (gone since the folder was listed)
                continue
            mode = info.st_mode
            if not stat.S_ISREG(mode):
                left_out.append(f"{rel} ({'a symbolic link' if stat.S_ISLNK(mode) else 'not a regular file'})")
                continue
            key = prefix + rel.replace("/", SEPARATOR)
            if not rules.RECORD_KEY.ok(key):
                bad.append(f"{rel} (key {key!r})")
            elif key in owner:
                bad.append(f"{rel} (key {key!r}, also {owner[key]})")
            else:
                owner[key] = rel
                items.append(Item(path, key, info.st_size, content_type(path)))
    if bad:
        shown = "\n  ".join(bad[:50]) + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else "")
        raise ClientError(
            f"{counted(len(bad), 'file')} can't be stored (a key has at most 256 letters, digits and !_.'()- ; "
            f"'/' becomes '{SEPARATOR}'; no two files may give the same key); nothing was uploaded:\n  {shown}"
        )
    return sorted(items, key=lambda i: i.key), sorted(left_out)


def existing_sizes(client: httpx.Client, store: str, prefix: str) -> dict[str, int]:
    """The store's keys under ``prefix`` with their sizes (every page of the listing). A page's next start key
    that was one already (the same page again, or a loop) is the server's error: the listing would never end."""
    sizes: dict[str, int] = {}
    start = None
    seen: set[str] = set()
    what = f"listing {store}"
    while True:
        params = {"limit": 1000, **({"prefix": prefix} if prefix else {})}
        if start:
            params["exclusiveStartKey"] = start
        page = data(request(client, "GET", store_path(store) + "/keys", what, params=params), what)
        with parsing(what):
            for i in page["items"]:
                key, size = i["key"], i["size"]
                if not isinstance(key, str) or type(size) is not int or size < 0:
                    raise BadAnswer(what, f"a key {shown(repr(key), 300)} of size {shown(repr(size), 100)}")
                sizes[key] = size
            if not page.get("isTruncated") or not page["items"]:
                return sizes
            start = page.get("nextExclusiveStartKey") or page["items"][-1]["key"]
            if not isinstance(start, str):
                raise BadAnswer(what, f"a next start key {shown(repr(start), 300)}")
        if start in seen:
            raise BadAnswer(what, f"the next page starts after {shown(repr(start), 300)} again: the listing "
                                  "does not advance")
        seen.add(start)


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = crc32(block, crc)
    return crc


class _Counted(io.FileIO):
    """A file whose reads move the progress bar (httpx still sees its size through fileno: a Content-Length)."""

    def __init__(self, path: Path, progress: Progress) -> None:
        # (not through a link: one put in the file's place since the folder was read)
        super().__init__(path, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NOFOLLOW", 0)))
        self.progress, self.sent = progress, 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.sent += len(data)
        self.progress.advance(len(data))
        return data


def upload(
    client: httpx.Client,
    store: str,
    items: list[Item],
    *,
    jobs: int = 8,
    prefix: str = "",
    progress: Callable[[str, int | None, int], Progress] = Progress,
    label: str = "upload",
) -> Summary:
    sizes = existing_sizes(client, store, prefix)
    bar = progress(label, sum(i.size for i in items), 0)
    summary = Summary()
    lock = threading.Lock()

    def one(item: Item) -> None:
        try:
            if sizes.get(item.key) == item.size and _same(client, store, item):
                bar.advance(item.size)
                with lock:
                    summary.skipped += 1
                return
            body: list[_Counted] = []

            def content() -> _Counted:  # a new attempt reads the file from its start: take its bytes off the bar
                if body:
                    bar.advance(-body[-1].sent)
                body.append(_Counted(item.path, bar))
                return body[-1]

            request(
                client, "PUT", record_path(store, item.key), f"upload of {item.path}", ok=(200, 201),
                content=content, headers={"Content-Type": item.content_type},
            )
            with lock:
                summary.uploaded += 1
                summary.uploaded_bytes += item.size
        except (ClientError, OSError) as exc:
            with lock:
                summary.failed.append(str(exc))

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for _ in pool.map(one, items):
                pass
    finally:
        bar.close()
    return summary


def _same(client: httpx.Client, store: str, item: Item) -> bool:
    r = request(client, "HEAD", record_path(store, item.key), f"checking {item.key}", ok=(200, 404))
    m = _OPENKVS_ETAG.match(r.headers.get("etag", ""))
    return r.status_code == 200 and m is not None and int(m[2], 16) == item.size and int(m[1], 16) == file_crc(
        item.path
    )


def ensure_store(client: httpx.Client, store: str, say: Callable[[str], None]) -> str:
    """``~NAME`` is created when missing (get-or-create by name); any other STORE must exist."""
    owner, tilde, name = store.partition("~")
    if tilde and not owner:
        r = request(client, "POST", "/v2/key-value-stores", f"creating store {name}", params={"name": name})
        if r.status_code == 201:
            say(f"created store {store}")
    else:
        request(client, "GET", store_path(store), f"store {store}")
    return store


