"""``openkvs download``: a store's ZIP archive into a file, resumed safely and verified.

A download goes to ``FILE.part``; beside it, ``FILE.part.json`` keeps the archive's ETag, size and the request it
answers. Resuming sends ``Range`` *with* ``If-Range: <ETag>``: the server continues the same archive (206) only if
the store has not changed since, else it sends the new archive whole (200) and the part is started over. A
``Range`` without ``If-Range`` (``curl -C -``) would append the new archive's tail to the old one's head: a file of
the right size that is no archive at all. At the end the file's size and every entry's CRC-32 are checked, and only
then is ``FILE.part`` renamed to ``FILE``: an interrupted or failed download never leaves a ``FILE`` that looks done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpcore
import httpx

from openkvs.client.http import (
    RETRIES,
    ClientError,
    cannot_connect,
    explain,
    gave_up,
    lost,
    retryable,
    store_path,
    wait_time,
)
from openkvs.client.localfiles import NOFOLLOW, create
from openkvs.client.progress import Progress
from openkvs.client.receive import Checker, direct_socket, from_socket, write_all
from openkvs.client.zipcheck import ZipStream, feed_file
from openkvs.crc import FAST_CRC
from openkvs.redact import redacted

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)\Z", re.ASCII)  # (a server's digits: ASCII only)
# httpcore reads a response 64 KiB per system call, and every read goes through h11's events (tens of microseconds
# of Python): for an archive of gigabytes that was most of this command's CPU. Reads of up to 1 MiB make 16x fewer
# trips (client CPU for a 1 GiB archive: 2.2-2.5 s -> 1.6-1.8 s, BENCHMARKS.md). It is a class attribute of
# httpcore's public HTTP11Connection, set for this process (the command line's own); a small response still
# costs one read.
READ_SIZE = 1 << 20
httpcore.HTTP11Connection.READ_NUM_BYTES = max(httpcore.HTTP11Connection.READ_NUM_BYTES, READ_SIZE)


@dataclass
class Partial:
    """What FILE.part.json says about FILE.part: which archive its bytes are the start of."""

    request: str
    etag: str
    size: int


@dataclass
class Downloaded:
    path: Path
    size: int
    entries: int
    kept: int  # bytes of an earlier attempt that were kept (0: downloaded from the start)
    restarted: bool  # an earlier partial file was dropped because the store had changed


def part_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".part"), out.with_name(out.name + ".part.json")


def download(
    client: httpx.Client,
    store: str,
    out: Path,
    *,
    prefix: str | None = None,
    collection: str | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[str, int | None, int], Progress] = Progress,
    retries: int = RETRIES,
    sleep: Callable[[float], None] = time.sleep,
    chunk: int | None = None,
    direct: bool = True,
    threaded: bool | None = None,
) -> Downloaded:
    """``chunk``: write at most this many bytes at a time (tests cut downloads at many places with it);
    ``direct``: receive the body straight from the socket when it can (receive.py), else through httpx;
    ``threaded``: check the bytes in a second thread, while the next ones arrive (default: only with zlib's CRC-32,
    whose cost is worth hiding; ISA-L's is not worth a thread's)."""
    if threaded is None:
        threaded = not FAST_CRC
    path = store_path(store) + "/records"
    params = {k: v for k, v in (("collection", collection), ("prefix", prefix)) if v is not None}
    # what the partial file belongs to (no token, no password: it is kept on disk and named in a message)
    request = f"{redacted(str(client.base_url))}{path}?{urlencode(params)}"
    part, meta = part_paths(out)
    _refuse_strangers(part, meta)
    partial = _load(part, meta, request, say)
    kept = part.stat().st_size if partial else 0
    restarted = False
    failures = 0
    bar: Progress | None = None
    stream = ZipStream()  # the check of what is in FILE.part, computed as it is written
    try:
        while partial is None or part.stat().st_size < partial.size:
            resumable = partial is not None and _strong(partial.etag)
            have = part.stat().st_size if resumable else 0
            headers = {"Accept-Encoding": "identity"}  # the archive's own bytes: ranges count those
            if partial and have:
                headers |= {"Range": f"bytes={have}-", "If-Range": partial.etag}
            try:
                with client.stream("GET", path, params=params, headers=headers) as r:
                    if r.status_code == 200:
                        if partial and have:
                            say(f"The store changed since {part.name} was begun: downloading its archive anew.")
                            restarted, kept = True, 0
                        partial = _begin(part, meta, request, r)
                        offset = 0
                    elif r.status_code == 206 and partial and _continues(r, partial, have):
                        offset = have
                    elif r.status_code in (206, 416):  # not the continuation asked for: never append it
                        say(f"The server did not continue the archive of {part.name}: downloading it anew.")
                        _discard(part, meta)
                        partial, kept = None, 0
                        failures += 1
                        if failures > retries:
                            raise ClientError(f"download of {store}: the server does not resume downloads")
                        continue
                    elif retryable(r.status_code) and failures < retries:
                        failures += 1
                        sleep(wait_time(r, failures))
                        continue
                    else:
                        raise explain(r, f"download of {store}")
                    if bar is None:
                        bar = progress(out.name, partial.size, offset)
                    else:
                        bar.set_total(partial.size, offset)
                    if offset == 0 or stream.pos > offset:
                        stream = ZipStream()
                    feed_file(stream, part, offset)  # a resume's kept bytes, unless this run wrote them
                    fd = _open(part, os.O_WRONLY)
                    try:
                        # Truncated only if longer: ext4 writes out at close() a file that was truncated to
                        # nothing and then written (its guard for rewrites), 0.2-0.4 s for a GiB that curl, writing
                        # a new file, does not pay.
                        if os.fstat(fd).st_size != offset:
                            os.ftruncate(fd, offset)
                        os.lseek(fd, offset, os.SEEK_SET)
                        checker = Checker(stream, threaded=threaded)
                        try:
                            at = _receive(r, fd, offset, partial.size, checker, bar, chunk, store, direct)
                        finally:
                            checker.close()
                    finally:
                        os.close(fd)
                    if at < partial.size:  # ended early without a transport error: resume
                        failures += 1
                        if failures > retries:
                            raise ClientError(f"download of {store}: the server kept ending it early")
            except httpx.TransportError as exc:
                failures += 1
                if (error := gave_up(f"download of {store}", client, exc, failures, retries)) is not None:
                    if partial is None:  # not a byte received, no FILE.part begun: nothing to resume
                        raise error from None
                    raise ClientError(
                        f"download of {store} interrupted ({lost(exc)}); {part} is kept: run the same command again to "
                        "resume"
                    ) from None
                why = f"connection lost ({type(exc).__name__})"
                if isinstance(exc, httpx.ConnectError):  # it never connected (or not again): say where it tried
                    why = cannot_connect(client, exc)
                say(f"{why[0].upper()}{why[1:]}; {'resuming' if partial else 'trying again'}.")
                sleep(wait_time(None, failures))
    finally:
        if bar is not None:
            bar.close()
    entries = _verify(part, meta, partial.size, stream)
    os.replace(part, out)
    meta.unlink(missing_ok=True)
    return Downloaded(out, partial.size, entries, kept, restarted)


def _receive(
    r: httpx.Response, fd: int, at: int, size: int, checker: Checker, bar: Progress, chunk: int | None, store: str,
    direct: bool,
) -> int:
    """The body of ``r`` written to ``fd`` from offset ``at`` (where it starts in the archive of ``size`` bytes)
    and fed to ``checker``; returns the offset reached. The body's first piece (what came with the headers) comes
    through httpx, the rest straight from the socket when it can (receive.py), else through httpx too."""
    sock = direct_socket(r) if direct else None
    start = at
    # Kept until the end: a generator left behind is closed, and httpcore's closes the connection with it.
    pieces = r.iter_raw(None if sock else chunk)
    for data in pieces:
        if at + len(data) > size:
            raise ClientError(f"download of {store}: the server sent more than the archive's size")
        view = memoryview(data)
        step = chunk or len(view) or 1
        for i in range(0, len(view), step):
            piece = view[i:i + step]
            write_all(fd, piece)
            checker.feed(piece)
            at += len(piece)
            bar.advance(len(piece))
        if sock is not None:
            break  # h11 buffers nothing beyond what it handed over: the rest is still in the socket
    if sock is not None and at < size:
        rest = int(r.headers["content-length"]) - (at - start)  # the body's length less its first piece
        if rest > size - at:
            raise ClientError(f"download of {store}: the server sent more than the archive's size")
        timeout = r.request.extensions.get("timeout", {}).get("read")
        at += from_socket(sock, fd, rest, checker, bar.advance, timeout=timeout, chunk=chunk)
    return at


def _temporary(meta: Path) -> Path:
    return meta.with_name(meta.name + ".tmp")


def _refuse_strangers(part: Path, meta: Path) -> None:
    """FILE.part, FILE.part.json and its temporary file are this command's own: one that is a symbolic link (or
    anything but a regular file) was put there by someone else, and writing it would write the file it points at
    (`x.zip.part -> ~/.bashrc`). It is refused before anything is read or written, not removed: it is not ours."""
    for path in (part, meta, _temporary(meta)):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ClientError(f"{path}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(mode):
            raise ClientError(f"{path} is a symbolic link, not a partial download: not followed, nothing was "
                              "written (remove it, or download to another file)")
        if not stat.S_ISREG(mode):
            raise ClientError(f"{path} is not a regular file: nothing was written (remove it, or download to another "
                              "file)")


def _open(path: Path, flags: int) -> int:
    """``path`` opened without following a link (one put there since _refuse_strangers looked is refused)."""
    try:
        return os.open(path, flags | NOFOLLOW, 0o666)
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}; nothing was written through it") from None


def _create(path: Path) -> int:
    """A new, empty ``path`` (localfiles.create: a stale one removed first, a link never written through)."""
    try:
        return create(path)
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}; nothing was written through it") from None


def _load(part: Path, meta: Path, request: str, say: Callable[[str], None]) -> Partial | None:
    """The partial download to resume, if FILE.part is the start of an archive of this very request."""
    if not part.exists():
        meta.unlink(missing_ok=True)
        return None
    try:
        partial = Partial(**json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError):
        say(f"{part.name} has no record of which archive it belongs to: downloading anew.")
        return None
    if partial.request != request:
        say(f"{part.name} is from another download ({partial.request}): downloading anew.")
        return None
    if part.stat().st_size > partial.size:
        say(f"{part.name} is longer than its archive: downloading anew.")
        return None
    return partial


def _begin(part: Path, meta: Path, request: str, r: httpx.Response) -> Partial:
    """A new archive starts: FILE.part emptied first, then its new ETag recorded, and only then its bytes."""
    etag = r.headers.get("etag", "")
    try:
        size = int(r.headers["content-length"])
    except (KeyError, ValueError):
        raise ClientError("the server sent the archive without its size (Content-Length)") from None
    os.close(_create(part))
    partial = Partial(request, etag, size)
    if _strong(etag):
        tmp = _temporary(meta)
        with os.fdopen(_create(tmp), "w") as f:
            f.write(json.dumps(partial.__dict__))
        os.replace(tmp, meta)
    else:
        meta.unlink(missing_ok=True)
    return partial


def _strong(etag: str) -> bool:
    """Only a strong ETag may go in If-Range (RFC 9110 13.1.5)."""
    return bool(etag) and not etag.startswith("W/")


def _continues(r: httpx.Response, partial: Partial, have: int) -> bool:
    """206 carrying exactly the rest of the archive FILE.part began: same ETag, from byte ``have``, same total."""
    m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
    return (
        m is not None
        and r.headers.get("etag", partial.etag) == partial.etag
        and (int(m[1]), int(m[2]), int(m[3])) == (have, partial.size - 1, partial.size)
    )


def _discard(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


def _verify(part: Path, meta: Path, size: int, stream: ZipStream) -> int:
    """The number of entries, once the size and every entry's CRC-32 check out; else FILE.part is removed (its
    bytes can't be trusted for a resume either) and the download fails."""
    try:
        actual = part.stat().st_size
        if actual != size:
            raise zipfile.BadZipFile(f"{actual} bytes instead of {size}")
        feed_file(stream, part, size)  # nothing left unless FILE.part was complete when this run began
        return stream.check(part)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        with contextlib.suppress(OSError):
            _discard(part, meta)
        raise ClientError(
            f"the downloaded archive failed its check ({exc}); the partial file was removed: run the command "
            "again to download it anew"
        ) from None
