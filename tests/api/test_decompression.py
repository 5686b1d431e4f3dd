"""Compression bombs against a real server (issue 11 items 2, 3 and 10): while a bomb is uploaded, or while a record
stored with a Content-Encoding is read decoded (a range near its end), the server's anonymous memory stays
bounded and another client's requests are still answered promptly. Large valid brotli bodies are accepted.

Memory is the server process's RssAnon, sampled every few milliseconds; latency is the slowest of another
client's small GETs made meanwhile. Both thresholds are far from what the unbounded decoder gave (hundreds of MiB,
seconds) and far above what a busy machine adds."""

from __future__ import annotations

import functools
import gzip
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import brotli
import pytest

from . import assert_error, new_store, rec_path

MIB = 1 << 20
BOMB = 1024 * MIB  # decoded size of the uploaded bombs
RECORD = 512 * MIB  # decoded size of the stored gzip record that is read back
LIMIT = 8 * MIB  # --max-record-bytes of the bomb upload's server
MEMORY_MAX = 100 * MIB  # most the server's RssAnon may grow during one attack
LATENCY_MAX = 1.0  # seconds: the slowest other request allowed meanwhile
IDENTITY = {"accept-encoding": "identity"}


@functools.cache
def gzip_bomb(size: int) -> bytes:
    """Zero bytes as gzip members of 64 MiB each (a valid multi-member gzip stream), built in a second or so."""
    member = gzip.compress(bytes(64 * MIB), compresslevel=9)
    return member * (size // (64 * MIB))


@functools.cache
def brotli_bomb(size: int) -> bytes:
    c = brotli.Compressor(quality=1, lgwin=24)
    zeros = bytes(MIB)
    return b"".join(c.process(zeros) for _ in range(size // MIB)) + c.finish()


def rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/PID/status")


@dataclass
class Seen:
    memory_growth: int = 0
    slowest: float = 0.0
    probes: int = 0


@contextmanager
def watching(server, probe_url: str) -> Iterator[Seen]:
    """While the block runs: the growth of the server's RssAnon over its value at the start, and the slowest of
    another client's GETs of ``probe_url`` (one after another, each with a fresh connection's worth of work)."""
    pid = server.proc.pid
    seen = Seen()
    base = rss_anon(pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.memory_growth = max(seen.memory_growth, rss_anon(pid) - base)
            time.sleep(0.002)

    def probe() -> None:
        with server.client() as c:
            while not done.is_set():
                t = time.monotonic()
                r = c.get(probe_url, timeout=60)
                seen.slowest = max(seen.slowest, time.monotonic() - t)
                seen.probes += 1
                assert r.status_code == 200
                time.sleep(0.005)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    try:
        yield seen
    finally:
        time.sleep(0.2)
        done.set()
        for t in threads:
            t.join(60)


def setup_store(server) -> tuple[str, str]:
    with server.client() as c:
        sid = new_store(c)["id"]
        probe = rec_path(sid, "probe")
        assert c.put(probe, content=b"small", headers={"content-type": "text/plain"}).status_code == 201
    return sid, probe


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request, start_server, tmp_path_factory):
    """A server process per backend whose records may have at most LIMIT bytes (a process: its memory is watched)."""
    tmp = tmp_path_factory.mktemp(f"limited-{request.param}")
    return start_server(tmp, request.param, "--rate-limits", "off", "--max-record-bytes", str(LIMIT))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited_here(request, start_server, tmp_path_factory):
    """The same server in this process, for what its answers show."""
    tmp = tmp_path_factory.mktemp(f"limited-here-{request.param}")
    return start_server(tmp, request.param, "--rate-limits", "off", "--max-record-bytes", str(LIMIT), in_process=True)


@pytest.mark.slow
@pytest.mark.parametrize("encoding,make", [("br", brotli_bomb), ("gzip", gzip_bomb)])
def test_a_bomb_upload_is_stopped_at_the_limit_without_memory_or_stall(limited, encoding, make):
    # issue 11 item 2: a 3 KB br body grew the server by 2 GiB and stalled everyone for 9-15 s
    bomb = make(BOMB)
    assert len(bomb) < LIMIT
    server = limited
    sid, probe = setup_store(server)
    with server.client() as c, watching(server, probe) as seen:
        r = c.put(rec_path(sid, "bomb"), content=bomb, headers={"content-encoding": encoding}, timeout=120)
    assert_error(r, 413, "request-too-large")
    with server.client() as c:
        assert c.get(rec_path(sid, "bomb")).status_code == 404
    assert seen.memory_growth < MEMORY_MAX, seen
    assert seen.slowest < LATENCY_MAX, seen


@pytest.mark.slow
def test_reading_a_gzip_record_decoded_streams_with_bounded_memory(start_server, tmp_path, backend):
    """Issue 11 item 3. A 0.5 MB gzip record holding 512 MiB of zeros, read by a client that doesn't accept gzip:
    its last byte (which means decoding all of it), then its first bytes; meanwhile memory and others' latency
    stay low."""
    server = start_server(tmp_path, backend, "--rate-limits", "off")
    sid, probe = setup_store(server)
    url = rec_path(sid, "zeros")
    with server.client() as c:
        r = c.put(url, content=gzip_bomb(RECORD), headers={"content-encoding": "gzip"}, timeout=120)
        assert r.status_code == 201, r.text
    server.stop()  # a fresh process: the upload's decoding leaves nothing in memory to reuse
    server.start()
    with server.client() as c:
        c.get(probe)
        with watching(server, probe) as seen:
            t = time.monotonic()
            tail = c.get(url, headers={**IDENTITY, "range": "bytes=-1"}, timeout=120)
            decoding = time.monotonic() - t  # (its last byte: the whole record decoded)
            head = c.get(url, headers={**IDENTITY, "range": "bytes=0-99"}, timeout=120)
            whole = c.head(url, headers=IDENTITY)
    assert tail.status_code == 206 and tail.content == b"\0"
    assert tail.headers["content-range"] == f"bytes {RECORD - 1}-{RECORD - 1}/{RECORD}"
    assert "content-encoding" not in tail.headers
    assert head.status_code == 206 and head.content == bytes(100)
    assert whole.status_code == 200 and whole.headers["content-length"] == str(RECORD)
    assert seen.memory_growth < MEMORY_MAX, seen
    # A decode holding the event loop would stall a probe for all of its time: the slowest probe is held to half
    # of that, measured in the same run, where a loaded machine stretches both (CI's four workers: a probe of 1.02 s
    # against the fixed 1.0 s this was). On a machine that decodes within 2 s, LATENCY_MAX still holds.
    assert seen.slowest < max(LATENCY_MAX, decoding / 2), (seen, decoding)


def mixed(n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += os.urandom(3000) + bytes([len(out) % 251]) * 7000
    return bytes(out[:n])


@pytest.mark.parametrize("size", [480 * 1024 + 1, 3 * MIB])
def test_a_large_brotli_body_is_stored_and_read_back(limited_here, size):
    # issue 11 item 10: refused with 400 "not valid br" once the decoded body passed ~480 KiB
    plain = mixed(size)
    enc = brotli.compress(plain, quality=5)
    with limited_here.client() as c:
        sid = new_store(c)["id"]
        url = rec_path(sid, "big-br")
        r = c.put(url, content=enc, headers={"content-encoding": "br", "content-type": "text/plain"})
        assert r.status_code == 201, r.text
        got = c.get(url, headers=IDENTITY)
        assert got.content == plain and got.headers["content-length"] == str(size)
        part = c.get(url, headers={**IDENTITY, "range": f"bytes={size - 1000}-"})
        assert part.status_code == 206 and part.content == plain[-1000:]
        with c.stream("GET", url, headers={"accept-encoding": "br"}) as raw:
            assert raw.headers["content-encoding"] == "br" and b"".join(raw.iter_raw()) == enc
        assert zlib.crc32(plain) == zlib.crc32(got.content)
