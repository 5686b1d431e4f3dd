"""A response's body into a file with as few copies as the machine allows, checked on the way.

Through httpx, every piece of a body is copied four times in Python before it is written (into h11's buffer,
out of it twice, into the bytes httpcore yields), each time into new memory: for an archive of a GiB that was
most of ``openkvs download``'s CPU. Here, once httpx has read the headers and handed over what h11 had buffered
beyond them (the body's first piece), the rest of a body of known length is received with ``recv_into`` from the
connection's own socket (httpcore's ``network_stream`` response extension) into a few buffers allocated once,
written with ``os.write``, and fed to the ZIP check (zipcheck.py): at once with ISA-L's CRC-32 (a hundredth of a
second per GiB), else in a thread of its own, as zlib's CRC-32 (a fifth of a second per GiB) lets go of the GIL and
is computed while the next buffer is received. h11 never sees the end of such a body, so httpcore closes the
connection afterwards instead of reusing it, which a command that makes one request does not miss.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx

from openkvs.client.zipcheck import ZipStream

# Bytes received, checked and written at a time. Small enough that they are still in the CPU's cache when the
# CRC-32 reads them and write() copies them out: with 1 MiB, write()'s copy into the page cache alone took as much
# CPU as curl's whole download (perf); 64 KiB makes 4x more trips through Python. Client CPU per GiB (median of 5
# to 6, a loaded machine, BENCHMARKS.md): 64 KiB 0.78 s, 128 KiB 0.66, 256 KiB 0.62-0.64, 512 KiB 0.79, 1 MiB 0.78;
# curl 0.65-0.70.
BUFFER = 256 << 10
BUFFERS = 4  # in flight between the receiving thread and the checking one (when there is one): 1 MiB


def direct_socket(r: httpx.Response) -> socket.socket | None:
    """The socket the rest of ``r``'s body can be received from directly, or None: an HTTP/1 response with a
    Content-Length and no transfer coding, on a connection of its own (plain, or TLS straight to the server; not
    TLS inside a proxy's tunnel, whose socket carries the proxy's encryption too)."""
    stream: Any = r.extensions.get("network_stream")
    if stream is None or r.http_version not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    if "content-length" not in r.headers or "transfer-encoding" in r.headers:
        return None
    try:
        sock = stream.get_extra_info("socket")
        tls = stream.get_extra_info("ssl_object")
    except Exception:  # any other kind of stream: the ordinary way
        return None
    if not isinstance(sock, socket.socket) or (tls is not None and not isinstance(sock, ssl.SSLSocket)):
        return None
    return sock


class Checker:
    """Feeds a ZipStream the bytes written to the file, in order: in a thread of its own (``threaded``) or at once.

    ``buffer()`` lends one of a few buffers allocated once; ``feed_lent(buf, n)`` hands its first ``n`` bytes over,
    and the buffer comes back once they are checked; ``feed(data)`` hands over bytes of the caller's, which take a
    buffer's place meanwhile: what waits to be checked stays bounded. ``close()`` waits for what is left and raises
    what the check raised."""

    def __init__(self, stream: ZipStream, *, threaded: bool = True, size: int = 0, count: int = BUFFERS) -> None:
        self.stream = stream
        size = size or BUFFER
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count if threaded else 1):
            self._free.put(bytearray(size))
        self._todo: queue.SimpleQueue[tuple[memoryview, bytearray] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="openkvs-download-check", daemon=True)
            self._thread.start()

    def buffer(self) -> bytearray:
        return self._free.get()

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def feed_lent(self, buf: bytearray, n: int) -> None:
        self._feed(memoryview(buf)[:n], buf)

    def feed(self, data: bytes | memoryview) -> None:
        self._feed(memoryview(data), None)

    def _feed(self, view: memoryview, lent: bytearray | None) -> None:
        if self._thread is None:
            self.stream.feed(view)
            if lent is not None:
                self._free.put(lent)
        else:
            self._todo.put((view, lent if lent is not None else self._free.get()))

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            view, token = item
            if self._error is None:
                try:
                    self.stream.feed(view)
                except BaseException as exc:  # raised again by close(), in the caller's thread
                    self._error = exc
            del view
            self._free.put(token)

    def close(self) -> None:
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


def write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def from_socket(
    sock: socket.socket,
    fd: int,
    left: int,
    checker: Checker,
    advance: Callable[[int], None],
    *,
    timeout: float | None,
    chunk: int | None = None,
) -> int:
    """Receives ``left`` bytes from ``sock`` into ``fd`` (at its position), each written block fed to ``checker``
    and counted by ``advance``; at most ``chunk`` bytes at a time when given. Returns how many came: fewer than
    ``left`` only if an exception is raised (httpx's ReadTimeout, ReadError or RemoteProtocolError for the
    network's failures, as httpx would have raised them)."""
    sock.settimeout(timeout)
    got = 0
    while left:
        buf = checker.buffer()
        view = memoryview(buf)
        want = min(len(buf), left, chunk or left)
        n = 0
        try:
            while n < want:
                k = sock.recv_into(view[n:want])
                if not k:
                    break
                n += k
        except TimeoutError as exc:
            checker.give_back(buf)
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            checker.give_back(buf)
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        except BaseException:  # Ctrl-C: what this buffer holds was not written, and is received again on resume
            checker.give_back(buf)
            raise
        if n:
            try:
                write_all(fd, view[:n])
            except BaseException:
                checker.give_back(buf)
                raise
            checker.feed_lent(buf, n)
            got += n
            left -= n
            advance(n)
        else:
            checker.give_back(buf)
        if n < want:
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body ({left} bytes missing)"
            )
    return got
